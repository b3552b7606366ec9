"""Ingest's resource bounds (issue 12): every download, process and source is bounded by a params
key, and an item over a bound becomes a reject naming that key while the rest is built.

Real HTTP on 127.0.0.1 (test_ingest.FileServer), real ffmpeg."""
from __future__ import annotations

import fcntl
import os
import time

import pytest
from test_ingest import FileServer, make_video, one_video, url_params

from genbuild import download
from genbuild.io.jsonio import read_json
from pvtt.data import ingest


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("bounds") / "good.mp4", seconds=1.0)   # 96x64, 25 frames


@pytest.fixture()
def http(clip):
    srv = FileServer()
    srv.files["/v/good.mp4"] = clip.read_bytes()
    yield srv
    srv.close()


def _reject(tmp_path, path: str, **kw) -> str:
    out = tmp_path / "raw" / "v1"
    info = ingest.run(one_video(tmp_path, path), "v1", out, url_params(tmp_path, **kw))
    assert info["status"] == "rejected" and read_json(out / "info.json")["reason"] == info["reason"]
    assert not (out / "video.mp4").exists()
    return info["reason"]


# ----------------------------------------------------------------------------- sources

@pytest.mark.parametrize("key,value,start", [
    ("max_side", 95, "too large:"), ("max_pixels", 96 * 64 - 1, "too large:"), ("max_seconds", 0.5, "too long:"),
])
def test_source_over_a_bound_is_a_reject_naming_the_key(clip, tmp_path, key, value, start):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "good.mp4").write_bytes(clip.read_bytes())
    reason = _reject(tmp_path, "good.mp4", **{key: value})
    assert reason.startswith(start) and f"ingest.{key}" in reason, reason


def test_source_at_the_bounds_is_kept(clip, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "good.mp4").write_bytes(clip.read_bytes())
    info = ingest.run(one_video(tmp_path, "good.mp4"), "v1", tmp_path / "raw" / "v1",
                      url_params(tmp_path, max_side=96, max_pixels=96 * 64, max_seconds=1.0))
    assert info["status"] == "ok", info["reason"]


# ----------------------------------------------------------------------------- downloads

def test_announced_size_over_the_cap_is_refused_before_the_body(http, tmp_path):
    size = len(http.files["/v/good.mp4"])
    reason = _reject(tmp_path, http.url("/v/good.mp4"), max_download_bytes=size - 1)
    assert reason.startswith("too large:") and "ingest.max_download_bytes" in reason and f"{size} bytes" in reason
    assert not list((tmp_path / "dl").glob("*.part")), "the useless .part is deleted"


def test_body_over_the_cap_without_a_length_is_cut_off(http, tmp_path):
    http.lengths = False
    with pytest.raises(download.TooLarge, match="received"):
        download.fetch(http.url("/v/good.mp4"), tmp_path / "dl", max_bytes=1000, backoff=0)
    assert not list((tmp_path / "dl").glob("*.part"))
    got = download.fetch(http.url("/v/good.mp4"), tmp_path / "dl2", max_bytes=10**9, backoff=0)
    assert got.path.read_bytes() == http.files["/v/good.mp4"]


def test_deadline_ends_a_stalled_download_and_keeps_the_part(http, tmp_path):
    http.fail, http.mode = 5, "stall"                       # half the body, then silence (20 s)
    t0 = time.monotonic()
    reason = _reject(tmp_path, http.url("/v/good.mp4"), timeout_seconds=30, download_deadline_seconds=0.6,
                     retries=5, backoff_seconds=0)
    assert time.monotonic() - t0 < 8
    assert reason.startswith("download failed:") and "ingest.download_deadline_seconds 0.6" in reason, reason
    part = list((tmp_path / "dl").glob("*.part"))
    assert len(part) == 1 and part[0].stat().st_size == len(http.files["/v/good.mp4"]) // 2   # resumable later


def test_waits_between_attempts_are_capped(http, tmp_path):
    http.fail, http.mode = 3, "500"
    delays = []
    got = download.fetch(http.url("/v/good.mp4"), tmp_path / "dl", retries=3, backoff=10, max_backoff=15,
                         sleep=delays.append)
    assert delays == [10, 15, 15] and got.attempts == 4


def test_a_wait_past_the_deadline_is_not_slept(http, tmp_path):
    http.fail, http.mode = 3, "500"
    delays = []
    with pytest.raises(download.DeadlineExceeded, match="HTTP 500"):
        download.fetch(http.url("/v/good.mp4"), tmp_path / "dl", retries=3, backoff=100, deadline=50,
                       sleep=delays.append)
    assert delays == []


@pytest.mark.parametrize("retries", [-1, 21, 2.0])
def test_retries_are_bounded(tmp_path, retries):
    with pytest.raises(ValueError, match=r"ingest\.retries"):
        ingest.validate_params({"ingest": {"retries": retries}})
    with pytest.raises(ValueError, match="retries"):
        download.fetch("http://127.0.0.1:9/x.mp4", tmp_path, retries=retries)


@pytest.mark.parametrize("key,value", [
    ("max_download_bytes", 0), ("max_download_bytes", 1.5), ("download_deadline_seconds", 0),
    ("stale_part_hours", -1), ("max_seconds", float("nan")), ("max_side", "big"), ("max_pixels", 0),
    ("max_backoff_seconds", -1),
])
def test_bound_params_validated(key, value):
    with pytest.raises(ValueError, match=f"ingest.{key}"):
        ingest.validate_params({"ingest": {key: value}})


def test_stale_parts_are_swept_unless_in_use(http, tmp_path):
    dl = tmp_path / "dl"
    dl.mkdir()
    old = time.time() - 7200

    def part(key: str, mtime: float | None) -> os.PathLike:
        p = dl / f"{key}.part"
        p.write_bytes(b"x" * 10)
        (dl / f"{key}.part.json").write_text("{}")
        if mtime is not None:
            os.utime(p, (mtime, mtime))
        return p

    stale, fresh, busy = part("a" * 64, old), part("b" * 64, None), part("c" * 64, old)
    with open(dl / f"{'c' * 64}.lock", "a+b") as held:       # another job is downloading that URL
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        got = download.fetch(http.url("/v/good.mp4"), dl, stale_part_seconds=3600)
    assert got.path.read_bytes() == http.files["/v/good.mp4"]
    assert not stale.exists() and not (dl / f"{'a' * 64}.part.json").exists()
    assert fresh.exists() and busy.exists()
