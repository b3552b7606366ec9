"""Ingest stage: real ffmpeg-made inputs, the real CLI, rejects that never fail the job."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pvtt import ingest
from pvtt.io.jsonio import read_json, read_jsonl
from pvtt.io.video import BITEXACT, probe
from pvtt.manifest import sha256_file

ROOT = Path(__file__).resolve().parents[1]
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
    assert info["probe"] == {"width": 96, "height": 64, "fps": 25.0, "n_frames": 25, "duration": 1.0, "codec": "h264"}
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
    res = run_cli(m, "v1", tmp_path / "v1")
    assert res.returncode == 0, res.stderr
    info = read_json(tmp_path / "v1" / "info.json")
    assert info["status"] == "ok" and info["category"] == "bag" and info["product_id"] is None


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
