"""The AVGen-DiT sample: real ffmpeg encodes, deterministic bytes, truth that matches the files."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from avgen.data import sample as av_sample
from avgen.data.measure import read_audio
from avgen.data.probe import probe_av

PARAMS = {"n_good": 1, "seconds": 2.0, "width": 640, "height": 480, "fps": 24, "sample_rate": 16000,
          "failures": ["small", "low_fps", "no_audio"]}
ENCODER = {"crf": 17, "preset": "medium", "threads": 1}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("avsample")
    a = av_sample.make_sample(root / "a", PARAMS, 7, ENCODER)
    b = av_sample.make_sample(root / "b", PARAMS, 7, ENCODER)
    return root / "a", root / "b", a, b


def test_rerun_gives_identical_bytes(two_runs):
    a, b, ra, rb = two_runs
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert [str(f) for f in files] == ["clips/av0000.mp4", "clips/avfail_low_fps.mp4", "clips/avfail_no_audio.mp4",
                                       "clips/avfail_small.mp4", "manifest.csv", "truth.json"]
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert ra == rb


def test_manifest_and_truth_describe_the_clips(two_runs):
    out, _, res, _ = two_runs
    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == av_sample.clip_ids(PARAMS)
    truth = json.loads((out / "truth.json").read_text())
    assert set(truth) == {r["id"] for r in rows} and truth == res["truth"]
    for r in rows:
        t = truth[r["id"]]
        assert r["source"] == f"clips/{r['id']}.mp4" and r["caption"] == t["caption"] and "bouncing" in t["caption"]
        assert t["expect"] == (None if t["kind"] == "good" else t["kind"])
        info = probe_av(out / r["source"])
        assert [info["width"], info["height"]] == t["size"] and info["fps"] == pytest.approx(t["fps"])
        assert info["seconds"] == pytest.approx(2.0, abs=0.05)
        assert info["has_audio"] == (t["kind"] != "no_audio")
        ev = t["events"]
        assert ev == sorted(ev) and all(0 < e <= 2.0 for e in ev) and len(ev) >= 2
    assert truth["avfail_small"]["size"] == [320, 240] and truth["avfail_low_fps"]["fps"] == 15
    good = probe_av(out / "clips/av0000.mp4")
    assert (good["sample_rate"], good["channels"], good["video_codec"], good["audio_codec"]) == (16000, 1, "h264", "aac")


def test_impacts_are_heard_at_their_truth_times(two_runs):
    """Each isolated impact starts a broadband burst at its truth time (high-passed energy jumps)."""
    out, _, res, _ = two_runs
    sr = 16000
    d = np.diff(read_audio(out / "clips/av0000.mp4", sr).astype(np.float64)) ** 2
    ev = res["truth"]["av0000"]["events"]
    isolated = [t for i, t in enumerate(ev) if i == 0 or t - ev[i - 1] > 0.15]
    assert isolated
    for t in isolated:
        i = int(round(t * sr))
        after = d[i:i + int(0.015 * sr)].mean()
        before = d[max(0, i - int(0.06 * sr)):i - int(0.02 * sr)].mean()
        assert after > 4 * before, (t, after, before)


def test_clips_depend_on_their_own_index_only(tmp_path):
    """A clip's bytes do not change with the number of other clips (seeded by (seed, index))."""
    res = av_sample.make_sample(tmp_path / "one", {**PARAMS, "failures": ["small"]}, 7, ENCODER)
    assert res["truth"]["avfail_small"] == av_sample.make_sample(
        tmp_path / "two", {**PARAMS, "n_good": 0, "failures": ["small"]}, 7, ENCODER)["truth"]["avfail_small"]
    assert (tmp_path / "one/clips/avfail_small.mp4").read_bytes() == (tmp_path / "two/clips/avfail_small.mp4").read_bytes()


def test_bad_sample_params_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="'sample.failures'"):
        av_sample.make_sample(tmp_path / "x", {"failures": ["wobbly"]}, 0, ENCODER)
    with pytest.raises(ValueError, match="'sample.width'"):
        av_sample.make_sample(tmp_path / "x", {"width": 641}, 0, ENCODER)
    assert not (tmp_path / "x").exists()


def test_bounces_are_physical():
    segs, hits = av_sample.flights(0.4, 0.0, 0.4, 0.8, 3.0)
    t_first = (2 * 0.4 / av_sample.GRAVITY) ** 0.5
    assert hits[0, 0] == pytest.approx(t_first) and hits[0, 1] == pytest.approx(av_sample.GRAVITY * t_first)
    assert np.all(np.diff(hits[:, 0]) > 0) and len(segs) == len(hits) + 1
    body = av_sample.Body("disc", "red", (255, 0, 0), 0.06, 0.5, 0.0, 0.4, 0.8, segs, hits)
    assert body.height(hits[:, 0]) == pytest.approx(np.zeros(len(hits)), abs=1e-9)
    assert body.height(np.linspace(0, 3, 500)).max() <= 0.4 + 1e-9


def test_main_cli(tmp_path):
    p = {"seed": 3, "sample": {**PARAMS, "n_good": 0, "failures": ["no_audio"], "seconds": 1.0}, "video": ENCODER}
    av_sample.main(["--out", str(tmp_path / "s"), "--params", json.dumps(p)])
    truth = json.loads((tmp_path / "s/truth.json").read_text())
    assert list(truth) == ["avfail_no_audio"] and truth["avfail_no_audio"]["kind"] == "no_audio"
