"""AVGen ingest (one batch of manifest rows) and the VGGSound / AudioSet manifest importer, with real
ffmpeg and real HTTP on 127.0.0.1."""
from __future__ import annotations

import csv
import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from avgen.data import importer, ingest
from avgen.data.probe import probe_av
from genbuild.io.av import write_av
from genbuild.io.jsonio import read_jsonl

PARAMS = {"data": {"clips_per_job": 4}, "ingest": {"retries": 0, "download_dir": None}}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("avmedia")
    frames = np.random.default_rng(0).integers(0, 255, (48, 32, 32, 3), dtype=np.uint8)
    audio = np.sin(np.linspace(0, 2000, 32000)).astype(np.float32) * 0.3
    write_av(d / "a.mp4", frames, 24, audio, 16000)
    return d


@pytest.fixture(scope="module")
def server(media):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SimpleHTTPRequestHandler, directory=str(media)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _manifest(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "source", "caption", "start", "seconds"])
        w.writerows(rows)
    return path


def test_batch_rows_are_a_slice_of_the_manifest(tmp_path):
    m = _manifest(tmp_path / "m.csv", [[f"c{i}", "x.mp4", "cap", "", ""] for i in range(10)])
    assert [r["id"] for _, r in ingest.batch_rows(m, "b0001", 4)] == ["c4", "c5", "c6", "c7"]
    assert [line for line, _ in ingest.batch_rows(m, "b0002", 4)] == [10, 11]
    (tmp_path / "bad.csv").write_text("id,caption\nc0,x\n")
    with pytest.raises(ValueError, match="lacks the column"):
        ingest.batch_rows(tmp_path / "bad.csv", "b0000", 4)


def test_ingest_keeps_good_rows_and_rejects_the_rest_by_name(media, server, tmp_path):
    params = {**PARAMS, "ingest": {"retries": 0, "download_dir": str(tmp_path / "dl")}}
    (media / "outside").mkdir(exist_ok=True)
    m = _manifest(media / "m.csv", [
        ["local", "a.mp4", "a local clip", "", ""],
        ["web", f"{server}/a.mp4", "a downloaded clip", "", ""],
        ["cut", "a.mp4", "a segment", "0.5", "1.0"],
        ["local", "a.mp4", "the same id again", "", ""],
        ["bad id!", "a.mp4", "x", "", ""],
        ["escape", "../../etc/passwd", "x", "", ""],
        ["ftp", "ftp://example.com/a.mp4", "x", "", ""],
        ["missing", "nope.mp4", "x", "", ""],
        ["garbage", "garbage.mp4", "x", "", ""],
    ])
    (media / "garbage.mp4").write_bytes(b"not a video" * 100)
    out = tmp_path / "b0000"
    s1 = ingest.run(m, "b0000", out, {**params, "data": {"clips_per_job": 16}})
    items = {i["id"]: i for i in read_jsonl(out / "items.jsonl")}
    assert set(items) == {"local", "web", "cut"} and s1["ingested"] == 3
    assert (out / "web.mp4").read_bytes() == (media / "a.mp4").read_bytes()
    assert 0.8 < probe_av(out / "cut.mp4")["seconds"] < 1.6  # cut without re-encoding (key frames)
    reasons = {r["item"]: r["reason"] for r in read_jsonl(out / "rejects.jsonl")}
    assert reasons["local"].startswith("duplicate id") and reasons["bad id!"].startswith("bad id")
    assert reasons["escape"].startswith("refused source") and "data root" in reasons["escape"]
    assert reasons["ftp"].startswith("refused source") and reasons["missing"].startswith("unreadable")
    assert reasons["garbage"].startswith("unreadable") and not (out / "garbage.mp4").exists()
    assert not list((tmp_path / "dl").glob("*.part"))


def test_importer_reads_vggsound_and_audioset_lists(tmp_path):
    (tmp_path / "vgg.csv").write_text("---g-f_I2yQ,1,people marching,test\nabc,notanumber,x,train\nxyz,30,dog barking,train\n")
    c = importer.convert(tmp_path / "vgg.csv", "vggsound", tmp_path / "m1.csv", {"url_template": "clips/{ytid}_{start:06d}.mp4"})
    assert c == {"rows": 3, "written": 2, "skipped": 1}
    rows = list(csv.DictReader(open(tmp_path / "m1.csv")))
    assert rows[0]["id"] == "g-f_I2yQ_000001000" and rows[0]["source"] == "clips/---g-f_I2yQ_000001.mp4"
    assert rows[1]["caption"] == "dog barking" and rows[1]["start"] == ""
    (tmp_path / "as.csv").write_text('# Segments csv\n# YTID, start_seconds, end_seconds, positive_labels\n'
                                     '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"\n')
    (tmp_path / "labels.csv").write_text('index,mid,display_name\n0,/m/09x0r,Speech\n1,/t/dd00088,Gush\n')
    c = importer.convert(tmp_path / "as.csv", "audioset", tmp_path / "m2.csv",
                         {"url_template": "https://mirror.example/{ytid}.mp4", "cut": True}, tmp_path / "labels.csv")
    row = next(csv.DictReader(open(tmp_path / "m2.csv")))
    assert c["written"] == 1 and row["caption"] == "Speech, Gush" and (row["start"], row["seconds"]) == ("30", "10")
    assert row["source"] == "https://mirror.example/--PJHxphWEs.mp4"
