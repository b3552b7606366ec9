"""Shots stage: PySceneDetect on real encoded videos with hard cuts at known frames."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from genbuild.io.jsonio import read_json, read_jsonl, write_json
from genbuild.io.video import probe, write_video
from pvtt.data import shots

ROOT = Path(__file__).resolve().parents[3]
PARAMS = {"shots": {"detector": "content", "threshold": 27.0, "min_scene_len": 12}}


def textured_shots(bounds: list[int], w: int, h: int, seed: int = 0) -> np.ndarray:
    """Each shot: a smooth random texture of its own palette, panning 1 px/frame, plus a moving box."""
    rng = np.random.default_rng(seed)
    frames = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        n = b - a
        tex = rng.random((h // 8 + 2, (w + n) // 8 + 2, 3)).astype(np.float32)
        tex = cv2.resize(tex, ((w + n) // 8 * 8 + 16, h // 8 * 8 + 16), interpolation=cv2.INTER_CUBIC)
        lo, hi = rng.integers(0, 120, 3), rng.integers(135, 256, 3)
        tex = np.clip(lo + tex * (hi - lo), 0, 255).astype(np.uint8)
        for i in range(n):
            f = tex[:h, i:i + w].copy()
            x = int((w - 30) * i / max(1, n - 1))
            f[h // 3:h // 3 + 20, x:x + 30] = 255 - lo.astype(np.uint8)
            frames.append(f)
    return np.stack(frames)


def make_raw(root: Path, vid: str, frames: np.ndarray, fps: float) -> Path:
    raw = root / "raw" / vid
    raw.mkdir(parents=True)
    write_video(raw / "video.mp4", frames, fps)
    write_json(raw / "info.json", {"id": vid, "status": "ok", "reason": None,
                                   "probe": probe(raw / "video.mp4").as_dict()})
    (raw / "rejects.jsonl").write_text("")
    return raw


def run_cli(raw: Path, out: Path, params: dict = PARAMS) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "shots.py"), "--params", json.dumps(params),
                           "--raw", str(raw), "--out", str(out)], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("fps,size,bounds", [
    (30, (320, 180), [0, 47, 121, 190, 260]),
    (25, (256, 144), [0, 63, 90, 170]),
    (24, (640, 360), [0, 30, 100]),          # downscaled for detection (larger side -> 256 px)
])
def test_hard_cuts_found_within_one_frame(tmp_path, fps, size, bounds):
    frames = textured_shots(bounds, *size, seed=fps)
    raw = make_raw(tmp_path, "vid000", frames, fps)
    out = tmp_path / "shots" / "vid000"
    res = run_cli(raw, out)
    assert res.returncode == 0, res.stderr
    js = read_json(out / "shots.json")
    assert js["status"] == "ok" and js["video"] == "vid000" and js["n_frames"] == bounds[-1]
    assert js["fps"] == pytest.approx(fps)
    true_cuts = bounds[1:-1]
    assert len(js["cuts"]) == len(true_cuts), js["cuts"]
    assert all(abs(c - t) <= 1 for c, t in zip(js["cuts"], true_cuts)), (js["cuts"], true_cuts)
    # shots tile [0, n_frames) and agree with the cuts
    sh = js["shots"]
    assert [s["index"] for s in sh] == list(range(len(true_cuts) + 1))
    assert sh[0]["start_frame"] == 0 and sh[-1]["end_frame"] == bounds[-1]
    assert all(a["end_frame"] == b["start_frame"] for a, b in zip(sh, sh[1:]))
    assert [s["start_frame"] for s in sh[1:]] == js["cuts"]
    assert sh[1]["start_time"] == pytest.approx(sh[1]["start_frame"] / fps, abs=1e-6)
    assert read_jsonl(out / "rejects.jsonl") == []
    assert "vid000" in res.stderr


def test_adaptive_detector_and_no_cut(tmp_path):
    bounds = [0, 60, 140]
    raw = make_raw(tmp_path, "v", textured_shots(bounds, 192, 108, seed=3), 30)
    r = shots.run(raw, tmp_path / "a", {"shots": {"detector": "adaptive", "min_scene_len": 12}})
    assert r["status"] == "ok" and len(r["cuts"]) == 1 and abs(r["cuts"][0] - 60) <= 1
    raw1 = make_raw(tmp_path, "one", textured_shots([0, 90], 192, 108, seed=4), 30)
    r1 = shots.run(raw1, tmp_path / "b", PARAMS)
    assert r1["cuts"] == [] and r1["shots"] == [{"index": 0, "start_frame": 0, "end_frame": 90,
                                                  "start_time": 0.0, "end_time": 3.0}]


def test_upstream_rejected_is_skipped(tmp_path):
    raw = tmp_path / "raw" / "bad"
    raw.mkdir(parents=True)
    write_json(raw / "info.json", {"id": "bad", "status": "rejected", "reason": "unreadable video: x", "probe": None})
    out = tmp_path / "shots" / "bad"
    res = run_cli(raw, out)
    assert res.returncode == 0, res.stderr
    js = read_json(out / "shots.json")
    assert js["status"] == "skipped" and js["cuts"] == [] and js["shots"] == [] and js["video"] == "bad"
    assert (out / "rejects.jsonl").read_text() == ""


def test_corrupt_video_rejected(tmp_path):
    raw = tmp_path / "raw" / "c"
    raw.mkdir(parents=True)
    (raw / "video.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(5000))
    write_json(raw / "info.json", {"id": "c", "status": "ok", "reason": None, "probe": None})
    out = tmp_path / "shots" / "c"
    res = run_cli(raw, out)
    assert res.returncode == 0, res.stderr
    js = read_json(out / "shots.json")
    assert js["status"] == "rejected" and "video.mp4" in js["reason"] and js["reason"].startswith("unreadable video")
    rows = read_jsonl(out / "rejects.jsonl")
    assert len(rows) == 1 and rows[0]["stage"] == "shots" and rows[0]["item"] == "c"


def test_invalid_params_name_the_key(tmp_path):
    for key, val in [("detector", "histogram"), ("threshold", -1), ("min_scene_len", 0), ("min_scene_len", 2.5)]:
        with pytest.raises(ValueError, match=f"shots.{key}"):
            shots.validate_params({"shots": {key: val}})
    res = run_cli(tmp_path, tmp_path / "o", {"shots": {"detector": "nope"}})
    assert res.returncode != 0 and "shots.detector" in res.stderr


def test_shots_from_cuts_and_process_size():
    assert shots.shots_from_cuts([5, 0, 5, 12, 20], 20, 10.0) == [
        {"index": 0, "start_frame": 0, "end_frame": 5, "start_time": 0.0, "end_time": 0.5},
        {"index": 1, "start_frame": 5, "end_frame": 12, "start_time": 0.5, "end_time": 1.2},
        {"index": 2, "start_frame": 12, "end_frame": 20, "start_time": 1.2, "end_time": 2.0}]
    assert shots.process_size(1920, 1080) == (256, 144)
    assert shots.process_size(1080, 1920) == (144, 256)
    assert shots.process_size(160, 90) == (160, 90)
