"""Ingest stage: real ffmpeg-made inputs, the real CLI, rejects that never fail the job."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from genbuild import download
from genbuild.io.jsonio import read_json, read_jsonl
from genbuild.io.video import BITEXACT, probe
from genbuild.manifest import sha256_file
from pvtt.data import ingest

ROOT = Path(__file__).resolve().parents[3]
PARAMS = {"ingest": {"min_frames": 12}}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def make_video(path: Path, seconds: float = 1.0, rate: int = 25, codec: str = "libx264") -> Path:
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size=96x64:rate={rate}:duration={seconds}", "-c:v", codec,
           "-pix_fmt", "yuv420p", *BITEXACT, str(path))
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("media")
    make_video(d / "good.mp4")
    make_video(d / "good.mkv")
    make_video(d / "raw.avi", codec="rawvideo")          # mp4 cannot hold rawvideo: remux fails
    make_video(d / "short.mp4", seconds=0.2)             # 5 frames < min_frames 12
    (d / "empty.mp4").write_bytes(b"")
    (d / "garbage.mp4").write_bytes(bytes(range(256)) * 64)
    good = (d / "good.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(good[: len(good) // 3])
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(d / "audio_only.mp4"))
    videos = [{"id": p, "path": f"{p}", "category": "watch", "caption": f"caption {p}"} for p in
              ("good.mp4", "good.mkv", "raw.avi", "short.mp4", "empty.mp4", "garbage.mp4", "truncated.mp4",
               "audio_only.mp4", "missing.mp4")]
    for v in videos:
        v["id"] = v["id"].replace(".", "_")
    videos[0]["product_id"] = "prod00"
    (d / "manifest.json").write_text(json.dumps({"videos": videos, "products": []}))
    return d


def run_cli(manifest: Path, vid: str, out: Path, params: dict = PARAMS) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "ingest.py"), "--params", json.dumps(params),
                           "--manifest", str(manifest), "--video-id", vid, "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT)


def test_mp4_copied_byte_for_byte(media, tmp_path):
    out = tmp_path / "raw" / "good_mp4"
    res = run_cli(media / "manifest.json", "good_mp4", out)
    assert res.returncode == 0, res.stderr
    info = read_json(out / "info.json")
    assert info["status"] == "ok" and info["reason"] is None
    assert (out / "video.mp4").read_bytes() == (media / "good.mp4").read_bytes()
    assert info["sha256"] == info["source_sha256"] == sha256_file(media / "good.mp4")
    assert info["probe"] == {"width": 96, "height": 64, "fps": 25.0, "n_frames": 25, "duration": 1.0, "codec": "h264",
                             "rotation": 0}
    assert (info["id"], info["category"], info["caption"], info["product_id"], info["source"]) == \
        ("good_mp4", "watch", "caption good.mp4", "prod00", "good.mp4")
    assert read_jsonl(out / "rejects.jsonl") == [] and (out / "rejects.jsonl").exists()
    assert "good_mp4" in res.stderr                     # progress is logged to stderr
    first = (out / "info.json").read_bytes()
    assert run_cli(media / "manifest.json", "good_mp4", out).returncode == 0
    assert (out / "info.json").read_bytes() == first     # deterministic rerun
    assert not list(out.parent.glob(".*tmp*"))           # atomic: no leftovers


def test_other_container_remuxed_to_mp4(media, tmp_path):
    out = tmp_path / "good_mkv"
    info = ingest.ingest_video(ingest.find_video(ingest.load_manifest(media / "manifest.json"), "good_mkv"),
                               media / "manifest.json", out, PARAMS)
    assert info["status"] == "ok"
    fmt = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=format_name", "-of", "csv=p=0",
                          str(out / "video.mp4")], capture_output=True, text=True, check=True).stdout
    assert "mp4" in fmt
    assert probe(out / "video.mp4").n_frames == 25
    assert info["sha256"] == sha256_file(out / "video.mp4") != info["source_sha256"]
    # remuxing is reproducible
    out2 = tmp_path / "again"
    ingest.ingest_video(ingest.find_video(ingest.load_manifest(media / "manifest.json"), "good_mkv"),
                        media / "manifest.json", out2, PARAMS)
    assert (out2 / "video.mp4").read_bytes() == (out / "video.mp4").read_bytes()


@pytest.mark.parametrize("vid,reason_start,fragment", [
    ("missing_mp4", "unreadable video", "no such file"),
    ("empty_mp4", "unreadable video", "empty file"),
    ("garbage_mp4", "unreadable video", "not a readable video"),
    ("truncated_mp4", "unreadable video", "truncated.mp4"),
    ("audio_only_mp4", "unreadable video", "no video stream"),
    ("short_mp4", "too few frames", "5 frames < ingest.min_frames 12"),
    ("raw_avi", "remux failed", "cannot remux"),
])
def test_bad_videos_are_rejected_not_fatal(media, tmp_path, vid, reason_start, fragment):
    out = tmp_path / vid
    res = run_cli(media / "manifest.json", vid, out)
    assert res.returncode == 0, res.stderr
    info = read_json(out / "info.json")
    assert info["status"] == "rejected"
    assert info["reason"].startswith(reason_start) and fragment in info["reason"], info["reason"]
    assert vid.rsplit("_", 1)[0] in info["reason"]       # the reason names the file
    assert info["probe"] is None and info["sha256"] is None
    assert not (out / "video.mp4").exists()
    rows = read_jsonl(out / "rejects.jsonl")
    assert len(rows) == 1 and rows[0]["stage"] == "ingest" and rows[0]["item"] == vid
    assert rows[0]["reason"] == info["reason"]


def test_unknown_id_is_a_usage_error(media, tmp_path):
    res = run_cli(media / "manifest.json", "vid999", tmp_path / "x")
    assert res.returncode != 0
    assert "vid999" in res.stderr and "manifest.json" in res.stderr
    assert not (tmp_path / "x").exists()


def test_yaml_manifest_and_absolute_paths(media, tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text(f"videos:\n  - id: v1\n    path: {media / 'good.mp4'}\n    category: bag\n    caption: a bag\n")
    # an absolute path outside the manifest's directory needs ingest.data_root to cover it
    res = run_cli(m, "v1", tmp_path / "v1", {"ingest": {"min_frames": 12, "data_root": str(media)}})
    assert res.returncode == 0, res.stderr
    info = read_json(tmp_path / "v1" / "info.json")
    assert info["status"] == "ok" and info["category"] == "bag" and info["product_id"] is None
    res = run_cli(m, "v1", tmp_path / "v1b")                   # default data root: the manifest's directory
    assert res.returncode == 0, res.stderr
    info = read_json(tmp_path / "v1b" / "info.json")
    assert info["status"] == "rejected" and info["reason"].startswith("refused source: video 'v1' path ")
    assert "outside the data root" in info["reason"] and str(media / "good.mp4") in info["reason"]


def test_bad_manifest_and_params(tmp_path, media):
    bad = tmp_path / "bad.json"
    bad.write_text('{"videos": [{"id": "a", "path": "x.mp4"}, {"id": "a", "path": "y.mp4"}]}')
    with pytest.raises(ingest.ManifestError, match="duplicate"):
        ingest.load_manifest(bad)
    with pytest.raises(ingest.ManifestError, match="not found"):
        ingest.load_manifest(tmp_path / "nope.json")
    for v in (0, -1, "12", 1.5, True):
        with pytest.raises(ValueError, match="ingest.min_frames"):
            ingest.validate_params({"ingest": {"min_frames": v}})
    res = run_cli(media / "manifest.json", "good_mp4", tmp_path / "p", {"ingest": {"min_frames": 0}})
    assert res.returncode != 0 and "ingest.min_frames" in res.stderr


# ----------------------------------------------------------------------------- URLs and the source policy

class FileServer:
    """A real HTTP server on 127.0.0.1 serving ``files`` with Range / If-Range support.

    ``fail`` = K makes the first K requests fail: ``mode`` "500" answers HTTP 500, "drop"
    sends the headers and half the body, then closes the connection, "stall" sends half the
    body and waits (until ``release`` is set) before closing. Every request is logged as
    {"path", "range", "if_range", "status", "sent"}.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.log: list[dict] = []
        self.fail = 0
        self.mode = "500"
        self.ranges = True
        self.lengths = True                             # False: no Content-Length, the body ends at the close
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rec = {"path": self.path, "range": self.headers.get("Range"), "if_range": self.headers.get("If-Range"),
                       "status": None, "sent": 0}
                server.log.append(rec)
                data = server.files.get(self.path)
                if data is None:
                    rec["status"] = 404
                    self.send_error(404)
                    return
                failing = server.fail > 0
                if failing:
                    server.fail -= 1
                    if server.mode == "500":
                        rec["status"] = 500
                        self.send_error(500, "injected failure")
                        return
                etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
                start = 0
                rng = self.headers.get("Range")
                if rng and server.ranges and self.headers.get("If-Range") in (None, etag):
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        rec["status"] = 416
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                body = data[start:]
                rec["status"] = 206 if start else 200
                self.send_response(rec["status"])
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                if server.ranges:
                    self.send_header("Accept-Ranges", "bytes")
                    self.send_header("ETag", etag)
                if server.lengths:
                    self.send_header("Content-Length", str(len(body)))
                else:
                    self.close_connection = True
                self.end_headers()
                if failing:                                   # drop / stall: half the body, then hang up
                    half = body[: len(body) // 2]
                    self.wfile.write(half)
                    self.wfile.flush()
                    rec["sent"] = len(half)
                    if server.mode == "stall":
                        server.release.wait(20)
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)
                rec["sent"] = len(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def reset(self):
        self.log.clear()
        self.fail, self.mode, self.ranges, self.lengths = 0, "500", True, True
        self.release.clear()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server(media):
    srv = FileServer()
    srv.files["/v/good.mp4"] = (media / "good.mp4").read_bytes()
    srv.files["/v/good.mkv"] = (media / "good.mkv").read_bytes()
    srv.files["/v/garbage.mp4"] = (media / "garbage.mp4").read_bytes()
    yield srv
    srv.close()


@pytest.fixture()
def srv(server):
    server.reset()
    yield server
    server.release.set()


def url_params(tmp_path: Path, **kw) -> dict:
    return {"ingest": {"min_frames": 12, "download_dir": str(tmp_path / "dl"), "retries": 3,
                       "backoff_seconds": 0.01, "timeout_seconds": 10, **kw}}


def one_video(tmp_path: Path, path: str, **extra) -> Path:
    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    m = d / "manifest.json"
    m.write_text(json.dumps({"videos": [{"id": "v1", "path": path, **extra}]}))
    return m


def assert_clean(out: Path, dl: Path | None = None) -> None:
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))          # no half-written output
    assert sorted(p.name for p in out.iterdir()) in (["info.json", "rejects.jsonl"],
                                                     ["info.json", "rejects.jsonl", "video.mp4"])
    if dl is not None and dl.exists():                               # nothing but lock files left in the cache
        assert all(p.suffix == ".lock" for p in dl.iterdir()), sorted(dl.iterdir())


def test_url_downloaded_with_sha256_recorded_and_verified(srv, tmp_path):
    data = srv.files["/v/good.mp4"]
    sha = hashlib.sha256(data).hexdigest()
    m = one_video(tmp_path, srv.url("/v/good.mp4"), sha256=sha.upper(), category="bag")
    out = tmp_path / "raw" / "v1"
    res = run_cli(m, "v1", out, url_params(tmp_path))
    assert res.returncode == 0, res.stderr
    info = read_json(out / "info.json")
    assert info["status"] == "ok", info["reason"]
    assert info["source"] == srv.url("/v/good.mp4") and info["category"] == "bag"
    assert info["source_sha256"] == info["sha256"] == sha
    assert (out / "video.mp4").read_bytes() == data
    assert info["probe"]["n_frames"] == 25
    assert [(r["status"], r["range"], r["sent"]) for r in srv.log] == [(200, None, len(data))]
    assert_clean(out, tmp_path / "dl")


def test_url_of_another_container_is_remuxed(srv, tmp_path):
    m = one_video(tmp_path, srv.url("/v/good.mkv"))
    info = ingest.run(m, "v1", tmp_path / "out", url_params(tmp_path))
    assert info["status"] == "ok" and info["source_sha256"] == sha256_file_bytes(srv.files["/v/good.mkv"])
    assert info["sha256"] == sha256_file(tmp_path / "out" / "video.mp4") != info["source_sha256"]
    assert_clean(tmp_path / "out", tmp_path / "dl")


def sha256_file_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.mark.parametrize("mode", ["500", "drop"])
def test_url_retried_after_failures(srv, tmp_path, mode):
    data = srv.files["/v/good.mp4"]
    srv.fail, srv.mode = 2, mode
    m = one_video(tmp_path, srv.url("/v/good.mp4"))
    info = ingest.run(m, "v1", tmp_path / "out", url_params(tmp_path))
    assert info["status"] == "ok", info["reason"]
    assert (tmp_path / "out" / "video.mp4").read_bytes() == data
    assert len(srv.log) == 3
    if mode == "500":
        assert [r["status"] for r in srv.log] == [500, 500, 200]
        assert all(r["range"] is None for r in srv.log)
    else:  # each dropped connection left bytes in the .part: the next attempt resumes, nothing is sent twice
        half1 = len(data) // 2
        half2 = (len(data) - half1) // 2
        assert [r["range"] for r in srv.log] == [None, f"bytes={half1}-", f"bytes={half1 + half2}-"]
        assert [r["status"] for r in srv.log] == [200, 206, 206]
        assert sum(r["sent"] for r in srv.log) == len(data)
        assert all(r["if_range"] for r in srv.log[1:])            # the ETag guards the resume
    assert_clean(tmp_path / "out", tmp_path / "dl")


def test_stalled_transfer_times_out_and_resumes(srv, tmp_path):
    data = srv.files["/v/good.mp4"]
    srv.fail, srv.mode = 1, "stall"                  # half the body, then silence
    got = download.fetch(srv.url("/v/good.mp4"), tmp_path / "dl", retries=1, backoff=0, timeout=0.5)
    assert got.path.read_bytes() == data and got.attempts == 2
    half = len(data) // 2
    assert [(r["range"], r["sent"]) for r in srv.log] == [(None, half), (f"bytes={half}-", len(data) - half)]


def test_backoff_is_exponential(srv, tmp_path):
    srv.fail, srv.mode = 3, "500"
    delays = []
    got = download.fetch(srv.url("/v/good.mp4"), tmp_path / "dl", retries=3, backoff=0.5, sleep=delays.append)
    assert delays == [0.5, 1.0, 2.0] and got.attempts == 4
    assert got.path.read_bytes() == srv.files["/v/good.mp4"]


def test_partial_part_file_is_resumed_with_a_range_request(srv, tmp_path):
    data = srv.files["/v/good.mp4"]
    url = srv.url("/v/good.mp4")
    dl = tmp_path / "dl"
    dl.mkdir()
    part = dl / f"{download.cache_key(url)}.part"
    part.write_bytes(data[:1000])                   # left by an earlier, killed run
    m = one_video(tmp_path, url, sha256=hashlib.sha256(data).hexdigest())
    info = ingest.run(m, "v1", tmp_path / "out", url_params(tmp_path))
    assert info["status"] == "ok", info["reason"]
    assert [(r["range"], r["status"], r["sent"]) for r in srv.log] == [("bytes=1000-", 206, len(data) - 1000)]
    assert (tmp_path / "out" / "video.mp4").read_bytes() == data
    assert_clean(tmp_path / "out", dl)


def test_resume_restarts_when_the_server_sends_everything(srv, tmp_path):
    data = srv.files["/v/good.mp4"]
    url = srv.url("/v/good.mp4")
    dl = tmp_path / "dl"
    dl.mkdir()
    key = download.cache_key(url)
    (dl / f"{key}.part").write_bytes(b"x" * 1000)                    # bytes of an older version of the file
    (dl / f"{key}.part.json").write_text(json.dumps({"url": url, "validator": '"stale-etag"'}))
    info = ingest.run(one_video(tmp_path, url), "v1", tmp_path / "out", url_params(tmp_path))
    assert info["status"] == "ok", info["reason"]
    assert [(r["range"], r["if_range"], r["status"]) for r in srv.log] == [("bytes=1000-", '"stale-etag"', 200)]
    assert (tmp_path / "out" / "video.mp4").read_bytes() == data
    srv.reset()
    srv.ranges = False                                                 # a server without range support
    (dl / f"{key}.part").write_bytes(data[:500])
    info = ingest.run(one_video(tmp_path, url), "v1", tmp_path / "out2", url_params(tmp_path))
    assert info["status"] == "ok" and (tmp_path / "out2" / "video.mp4").read_bytes() == data
    assert [(r["range"], r["status"], r["sent"]) for r in srv.log] == [("bytes=500-", 200, len(data))]


def test_complete_part_is_finished_by_a_416(srv, tmp_path):
    data = srv.files["/v/good.mp4"]
    url = srv.url("/v/good.mp4")
    dl = tmp_path / "dl"
    dl.mkdir()
    (dl / f"{download.cache_key(url)}.part").write_bytes(data)        # killed between last byte and rename
    got = download.fetch(url, dl, retries=0)
    assert got.path.read_bytes() == data and [r["status"] for r in srv.log] == [416]


def test_part_survives_a_killed_job_and_the_next_run_resumes(srv, tmp_path):
    data = srv.files["/v/good.mp4"]
    url = srv.url("/v/good.mp4")
    srv.fail, srv.mode = 1, "stall"                  # half the body, then the server hangs
    m = one_video(tmp_path, url)
    out = tmp_path / "raw" / "v1"
    params = url_params(tmp_path, timeout_seconds=30)
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "ingest.py"), "--params", json.dumps(params),
                             "--manifest", str(m), "--video-id", "v1", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    part = tmp_path / "dl" / f"{download.cache_key(url)}.part"
    half = len(data) // 2
    deadline = time.time() + 30
    while time.time() < deadline and not (part.exists() and part.stat().st_size >= half):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)                # the job dies mid-download
    proc.wait()
    srv.release.set()
    assert part.stat().st_size == half and part.read_bytes() == data[:half]
    assert not out.exists()
    info = ingest.run(m, "v1", out, params)
    assert info["status"] == "ok", info["reason"]
    assert (out / "video.mp4").read_bytes() == data
    assert [(r["range"], r["sent"]) for r in srv.log] == [(None, half), (f"bytes={half}-", len(data) - half)]
    assert_clean(out, tmp_path / "dl")


def test_sha256_mismatch_is_rejected(srv, tmp_path, media):
    bad = "0" * 64
    m = one_video(tmp_path, srv.url("/v/good.mp4"), sha256=bad)
    res = run_cli(m, "v1", tmp_path / "out", url_params(tmp_path))
    assert res.returncode == 0, res.stderr
    info = read_json(tmp_path / "out" / "info.json")
    assert info["status"] == "rejected" and info["reason"].startswith("sha256 mismatch: " + srv.url("/v/good.mp4"))
    assert bad in info["reason"] and sha256_file(media / "good.mp4") in info["reason"]
    assert read_jsonl(tmp_path / "out" / "rejects.jsonl")[0]["reason"] == info["reason"]
    assert_clean(tmp_path / "out", tmp_path / "dl")                    # the mismatching .part is gone too
    # a local file is checked the same way
    (tmp_path / "data" / "good.mp4").write_bytes((media / "good.mp4").read_bytes())
    m = one_video(tmp_path, "good.mp4", sha256=bad)
    info = ingest.run(m, "v1", tmp_path / "out2", PARAMS)
    assert info["status"] == "rejected" and info["reason"].startswith("sha256 mismatch: ") and bad in info["reason"]


def test_bad_url_download_rejected(srv, tmp_path):
    info = ingest.run(one_video(tmp_path, srv.url("/v/garbage.mp4")), "v1", tmp_path / "o1", url_params(tmp_path))
    assert info["status"] == "rejected" and info["reason"].startswith("unreadable video: " + srv.url("/v/garbage.mp4"))
    assert_clean(tmp_path / "o1", tmp_path / "dl")
    srv.reset()
    info = ingest.run(one_video(tmp_path, srv.url("/v/nope.mp4")), "v1", tmp_path / "o2", url_params(tmp_path))
    assert info["status"] == "rejected" and info["reason"].startswith("download failed: ")
    assert "HTTP 404" in info["reason"] and len(srv.log) == 1          # not worth a retry


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_url_rejected_after_retries(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/video.mp4"
    m = one_video(tmp_path, url)
    res = run_cli(m, "v1", tmp_path / "out", url_params(tmp_path, retries=2))
    assert res.returncode == 0, res.stderr                             # the stage goes on
    info = read_json(tmp_path / "out" / "info.json")
    assert info["status"] == "rejected"
    assert info["reason"].startswith(f"download failed: {url}: no complete download after 3 attempts")
    assert "refused" in info["reason"].lower(), info["reason"]
    rows = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert len(rows) == 1 and rows[0]["source"] == url
    assert_clean(tmp_path / "out")


@pytest.mark.parametrize("path,fragment", [
    ("ftp://example.com/v.mp4", "URL scheme 'ftp' is not allowed"),
    ("file:///etc/passwd", "URL scheme 'file' is not allowed"),
    ("FILE:good.mp4", "URL scheme 'file' is not allowed"),
    ("s3://bucket/v.mp4", "URL scheme 's3' is not allowed"),
    ("data:video/mp4;base64,AAAA", "URL scheme 'data' is not allowed"),
    ("http:///v.mp4", "URL has no host"),
    ("../outside.mp4", "outside the data root"),
    ("sub/../../outside.mp4", "outside the data root"),
    ("/etc/hostname", "outside the data root"),
    ("link.mp4", "through a symlink"),
])
def test_refused_sources_are_per_item_rejects(tmp_path, media, path, fragment):
    (tmp_path / "outside.mp4").write_bytes((media / "good.mp4").read_bytes())
    m = one_video(tmp_path, path)
    (tmp_path / "data" / "link.mp4").symlink_to(tmp_path / "outside.mp4")
    res = run_cli(m, "v1", tmp_path / "out", url_params(tmp_path))
    assert res.returncode == 0, res.stderr
    info = read_json(tmp_path / "out" / "info.json")
    assert info["status"] == "rejected"
    assert info["reason"].startswith(f"refused source: video 'v1' path {path!r}: "), info["reason"]
    assert fragment in info["reason"], info["reason"]
    assert read_jsonl(tmp_path / "out" / "rejects.jsonl")[0]["reason"] == info["reason"]
    assert_clean(tmp_path / "out")
    assert not (tmp_path / "dl").exists()                               # nothing was fetched
    with pytest.raises(ingest.ManifestError, match=r"videos\[0\] \(id 'v1'\) path"):
        ingest.load_manifest(m, strict=True)


def test_data_root_and_inside_paths(tmp_path, media):
    d = tmp_path / "data"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "good.mp4").write_bytes((media / "good.mp4").read_bytes())
    (d / "in_link.mp4").symlink_to(d / "sub" / "good.mp4")           # a symlink that stays inside is fine
    (d / "manifest.json").write_text(json.dumps({"videos": [
        {"id": "a", "path": "sub/../sub/good.mp4"}, {"id": "b", "path": "in_link.mp4"},
        {"id": "c", "path": str(d / "sub" / "good.mp4")}, {"id": "d", "path": "./weird:name.mp4"}]}))
    manifest = ingest.load_manifest(d / "manifest.json", strict=True)
    for vid in "abc":
        info = ingest.ingest_video(ingest.find_video(manifest, vid), d / "manifest.json", tmp_path / vid, PARAMS)
        assert info["status"] == "ok", info["reason"]
    info = ingest.ingest_video(ingest.find_video(manifest, "d"), d / "manifest.json", tmp_path / "d", PARAMS)
    assert info["reason"].startswith("unreadable video") and "no such file" in info["reason"]
    # a narrower data root refuses what lies outside it
    narrow = {"ingest": {"min_frames": 12, "data_root": str(d / "nothing")}}
    info = ingest.ingest_video(ingest.find_video(manifest, "a"), d / "manifest.json", tmp_path / "a2", narrow)
    assert info["reason"].startswith("refused source: video 'a' path 'sub/../sub/good.mp4': ")


def test_manifest_source_shape_errors_name_the_entry(tmp_path):
    m = tmp_path / "m.json"
    for videos, match in [
        ([{"id": "a", "path": 5}], r"videos\[0\] \(id 'a'\) 'path' must be a string"),
        ([{"id": "a", "path": "a.mp4"}, {"id": "b", "path": "b.mp4", "sha256": "abc"}],
         r"videos\[1\] \(id 'b'\) 'sha256' must be 64 hex digits, got 'abc'"),
    ]:
        m.write_text(json.dumps({"videos": videos}))
        with pytest.raises(ingest.ManifestError, match=match):
            ingest.load_manifest(m)
    m.write_text(json.dumps({"videos": [{"id": "a", "path": "ftp://h/a.mp4"}, {"id": "b", "path": "b.mp4"}],
                             "products": [{"id": "p", "views": [{"view": "v0", "path": "../x.png"}]}]}))
    assert ingest.load_manifest(m)["videos"][0]["id"] == "a"           # not strict: per-item rejects later
    with pytest.raises(ingest.ManifestError) as ei:
        ingest.load_manifest(m, strict=True)
    msg = str(ei.value)
    assert "2 refused source(s)" in msg and "videos[0] (id 'a') path 'ftp://h/a.mp4'" in msg
    assert "products[0] (id 'p') views[0] path '../x.png'" in msg and "'b.mp4'" not in msg


@pytest.mark.parametrize("key,value", [
    ("retries", -1), ("retries", 1.5), ("backoff_seconds", -0.1), ("backoff_seconds", "1"),
    ("timeout_seconds", 0), ("download_dir", ""), ("download_dir", 3), ("data_root", ""),
    ("keep_downloads", "yes"), ("min_side", 0),
])
def test_new_params_validated(key, value):
    with pytest.raises(ValueError, match=f"ingest.{key}"):
        ingest.validate_params({"ingest": {key: value}})


def test_keep_downloads_reuses_the_complete_file(srv, tmp_path):
    url = srv.url("/v/good.mp4")
    m = one_video(tmp_path, url)
    params = url_params(tmp_path, keep_downloads=True)
    assert ingest.run(m, "v1", tmp_path / "o1", params)["status"] == "ok"
    kept = tmp_path / "dl" / f"{download.cache_key(url)}.mp4"
    assert kept.read_bytes() == srv.files["/v/good.mp4"]
    assert ingest.run(m, "v1", tmp_path / "o2", params)["status"] == "ok"
    assert len(srv.log) == 1                                           # the second run did not download again


def test_product_view_from_url(srv, tmp_path):
    """Product views may be URLs too: downloaded the same way, refused schemes rejected per view."""
    import io

    import numpy as np
    from PIL import Image

    from pvtt.data import products

    img = np.full((40, 60, 3), 255, np.uint8)
    img[10:30, 20:40] = (200, 30, 30)                      # a red product on white
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    srv.files["/p/front.png"] = buf.getvalue()
    d = tmp_path / "data"
    d.mkdir()
    m = d / "manifest.json"
    m.write_text(json.dumps({"videos": [], "products": [{"id": "p1", "category": "box", "views": [
        {"view": "front", "path": srv.url("/p/front.png")}, {"view": "side", "path": "ftp://example.com/side.png"}]}]}))
    params = {"products": {"backend": "white_matting"}, **url_params(tmp_path)}
    res = products.run(m, "p1", tmp_path / "out", params)
    assert [v["view"] for v in res["views"]] == ["front"]
    assert res["views"][0]["width"] >= 20 and res["views"][0]["source"] == srv.url("/p/front.png")
    rows = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert [r["item"] for r in rows] == ["p1/side"] and rows[0]["reason"].startswith("refused source")
    assert not [p for p in (tmp_path / "dl").iterdir() if p.suffix != ".lock"]   # the download is not kept
