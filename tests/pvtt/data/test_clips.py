"""Clips stage: ffprobe-checked standard clips; raw_frame_index checked against what ffmpeg shows."""
from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from genbuild.io.jsonio import read_json, read_jsonl, write_json
from genbuild.io.video import probe, read_frames, write_video
from pvtt.data import clips as C

ROOT = Path(__file__).resolve().parents[3]
PARAMS = {"clips": {"width": 160, "height": 90, "fps": 24, "min_seconds": 2.0, "max_seconds": 4.0, "trim_frames": 2},
          "video": {"crf": 17, "preset": "medium", "threads": 1}}
SRC_W, SRC_H = 320, 240            # 4:3 source -> centre crop [0, 30, 320, 180] for 16:9 clips
BITS = 11


def block(b: int) -> tuple[int, int, int, int]:
    """Source (x0, y0, x1, y1) of the block that shows bit ``b`` of the frame index."""
    r, c = divmod(b, 4)
    x0, y0 = 10 + c * 78, 40 + r * 55
    return x0, y0, x0 + 40, y0 + 40


def numbered_frames(n: int) -> np.ndarray:
    """Frame i shows i in binary (white blocks on a dark background)."""
    fr = np.full((n, SRC_H, SRC_W, 3), 30, np.uint8)
    for i in range(n):
        for b in range(BITS):
            if (i >> b) & 1:
                x0, y0, x1, y1 = block(b)
                fr[i, y0:y1, x0:x1] = 255
    return fr


def decode_numbers(frames: np.ndarray, clip: dict) -> list[int]:
    centres = C.source_to_clip_xy(np.array([[(block(b)[0] + block(b)[2]) / 2, (block(b)[1] + block(b)[3]) / 2]
                                            for b in range(BITS)]), clip)
    out = []
    for f in frames:
        g = f.mean(axis=-1)
        out.append(sum(1 << b for b, (x, y) in enumerate(centres) if g[int(y), int(x)] > 128))
    return out


def make_inputs(root: Path, vid: str, fps, bounds_s: list[float]) -> tuple[Path, Path, list[int]]:
    bounds = [round(s * float(fps)) for s in bounds_s]
    raw = root / "raw" / vid
    raw.mkdir(parents=True)
    write_video(raw / "video.mp4", numbered_frames(bounds[-1]), fps)
    pr = probe(raw / "video.mp4").as_dict()
    write_json(raw / "info.json", {"id": vid, "status": "ok", "reason": None, "probe": pr})
    sh = root / "shots" / vid
    sh.mkdir(parents=True)
    shots = [{"index": i, "start_frame": a, "end_frame": b, "start_time": a / pr["fps"], "end_time": b / pr["fps"]}
             for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]
    write_json(sh / "shots.json", {"video": vid, "status": "ok", "fps": pr["fps"], "n_frames": bounds[-1],
                                   "cuts": bounds[1:-1], "shots": shots})
    return raw, sh, bounds


def run_cli(raw: Path, sh: Path, out: Path, params: dict = PARAMS) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "clips.py"), "--params", json.dumps(params),
                           "--raw", str(raw), "--shots", str(sh), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT)


def ffprobe(path: Path) -> dict:
    res = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=width,height,r_frame_rate,avg_frame_rate,nb_read_frames,codec_name,pix_fmt:"
                          "format=duration", "-of", "json", str(path)], capture_output=True, text=True, check=True)
    d = json.loads(res.stdout)
    return {**d["streams"][0], "duration": float(d["format"]["duration"])}


# Shots (seconds): 1.6 s (too short after trimming), 5.0 s (4 s clip + dropped rest),
# 8.3 s (two 4 s clips), 2.7 s (one clip between 2 and 4 s).
BOUNDS_S = [0, 1.6, 6.6, 14.9, 17.6]


@pytest.mark.parametrize("fps", [30, 25, Fraction(30000, 1001), 60])
def test_clips_are_standard_and_frame_exact(tmp_path, fps):
    raw, sh, bounds = make_inputs(tmp_path, "vid000", fps, BOUNDS_S)
    out = tmp_path / "clips" / "vid000"
    res = run_cli(raw, sh, out)
    assert res.returncode == 0, res.stderr
    js = read_json(out / "clips.json")
    assert js["status"] == "ok" and js["video"] == "vid000"
    ids = [c["id"] for c in js["clips"]]
    assert ids == ["vid000_s01c0", "vid000_s02c0", "vid000_s02c1", "vid000_s03c0"]
    assert sorted(p.name for p in out.glob("*.mp4")) == sorted(f"{i}.mp4" for i in ids)

    rej = read_jsonl(out / "rejects.jsonl")
    assert [(r["stage"], r["item"]) for r in rej] == [("clips", "vid000_s00")]
    assert rej[0]["reason"].startswith(f"shot too short: {(bounds[1] - 4) / float(fps):.2f}s")  # minus 2x2 frames
    assert rej[0]["frames"] == bounds[1] - 4

    for c in js["clips"]:
        p = ffprobe(out / c["path"])
        assert (p["width"], p["height"]) == (160, 90)
        assert p["r_frame_rate"] == "24/1" and p["avg_frame_rate"] == "24/1"
        assert p["codec_name"] == "h264" and p["pix_fmt"] == "yuv420p"
        assert int(p["nb_read_frames"]) == c["n_frames"]
        assert 2.0 <= p["duration"] <= 4.0 + 1e-6 and 2.0 <= c["duration"] <= 4.0
        assert c["duration"] == pytest.approx(c["n_frames"] / 24)
        assert c["crop"] == [0, 30, 320, 180] and (c["src_width"], c["src_height"]) == (SRC_W, SRC_H)
        # the clip lies inside its shot, minus the trimmed frames
        shot = c["shot"]
        assert bounds[shot] + 2 <= c["src_start_frame"]
        assert c["src_start_frame"] + c["src_n_frames"] <= bounds[shot + 1] - 2
        # every clip frame shows the source frame raw_frame_index says
        shown = decode_numbers(read_frames(out / c["path"]), c)
        expected = [C.raw_frame_index(c, k) for k in range(c["n_frames"])]
        assert shown == expected, (c["id"], [(k, s, e) for k, (s, e) in enumerate(zip(shown, expected)) if s != e][:5])
    by_id = {c["id"]: c for c in js["clips"]}
    assert by_id["vid000_s02c0"]["n_frames"] == by_id["vid000_s02c1"]["n_frames"] == 96      # as long as possible
    assert by_id["vid000_s02c1"]["src_start_frame"] == by_id["vid000_s02c0"]["src_start_frame"] + \
        by_id["vid000_s02c0"]["src_n_frames"]


def test_spec_formula_differs_when_downsampling():
    """The naive src_start + round(k * src_fps / fps) is off by one for 30 -> 24 fps; ffmpeg's rule is not."""
    clip = {"src_start_frame": 10, "src_fps": 30.0, "fps": 24.0, "src_n_frames": 100}
    assert [C.raw_frame_index(clip, k) for k in range(5)] == [10, 11, 13, 14, 15]
    assert [10 + round(k * 30 / 24) for k in range(5)] == [10, 11, 12, 14, 15]
    up = {"src_start_frame": 0, "src_fps": 12.0, "fps": 24.0, "src_n_frames": 10}
    assert [C.raw_frame_index(up, k) for k in range(6)] == [0, 0, 1, 1, 2, 2]


def test_mask_mapping_matches_the_clip_pixels(tmp_path):
    raw, sh, _ = make_inputs(tmp_path, "v", 25, [0, 3.0])
    js = C.run(raw, sh, tmp_path / "out", PARAMS)
    clip = js["clips"][0]
    frames = read_frames(tmp_path / "out" / clip["path"])
    for k in (0, 7, 31):
        j = C.raw_frame_index(clip, k)
        src_mask = np.zeros((SRC_H, SRC_W), bool)
        for b in range(BITS):
            if (j >> b) & 1:
                x0, y0, x1, y1 = block(b)
                src_mask[y0:y1, x0:x1] = True
        want = C.clip_mask_from_source(src_mask, clip)
        got = frames[k].mean(-1) > 128
        assert want.shape == (90, 160)
        iou = (want & got).sum() / max(1, (want | got).sum())
        assert iou > 0.9, (k, iou)
    stack = C.clip_mask_from_source(np.zeros((2, SRC_H, SRC_W), bool), clip)
    assert stack.shape == (2, 90, 160) and not stack.any()
    with pytest.raises(ValueError, match="does not match"):
        C.clip_mask_from_source(np.zeros((10, 10), bool), clip)
    assert C.source_box_to_clip([0, 30, 320, 210], clip) == [0.0, 0.0, 160.0, 90.0]


def test_deterministic_rerun(tmp_path):
    raw, sh, _ = make_inputs(tmp_path, "v", 30, [0, 2.5, 5.2])
    a = C.run(raw, sh, tmp_path / "a", PARAMS)
    b = C.run(raw, sh, tmp_path / "b", PARAMS)
    assert a == b and len(a["clips"]) == 2
    for name in ["clips.json", "rejects.jsonl"] + [c["path"] for c in a["clips"]]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_skipped_and_all_rejected(tmp_path):
    raw = tmp_path / "raw" / "x"
    raw.mkdir(parents=True)
    write_json(raw / "info.json", {"id": "x", "status": "rejected", "reason": "unreadable video: x", "probe": None})
    sh = tmp_path / "shots" / "x"
    sh.mkdir(parents=True)
    write_json(sh / "shots.json", {"video": "x", "status": "skipped", "cuts": [], "shots": []})
    out = tmp_path / "clips" / "x"
    res = run_cli(raw, sh, out)
    assert res.returncode == 0, res.stderr
    js = read_json(out / "clips.json")
    assert js == {"video": "x", "status": "skipped", "reason": None, "clips": []}
    assert (out / "rejects.jsonl").read_text() == ""

    raw2, sh2, _ = make_inputs(tmp_path / "t", "short", 30, [0, 1.0, 2.0])
    js2 = C.run(raw2, sh2, tmp_path / "clips" / "short", PARAMS)
    assert js2["status"] == "rejected" and js2["clips"] == [] and "shot too short" in js2["reason"]
    assert len(read_jsonl(tmp_path / "clips" / "short" / "rejects.jsonl")) == 2


def test_plan_and_geometry_helpers():
    cfg = C.validate_params(PARAMS)[0]
    # 30 fps shot of 300 frames: 296 usable -> 120 + 120 (4 s each); 56 left = 1.87 s < 2 s dropped
    plan, usable = C.plan_shot(0, 300, Fraction(30), cfg)
    assert usable == 296 and plan == [(2, 120, 96), (122, 120, 96)]
    assert C.plan_shot(0, 63, Fraction(30), cfg)[0] == []                       # 59 frames = 1.97 s
    assert C.plan_shot(0, 64, Fraction(30), cfg)[0] == [(2, 60, 48)]           # exactly 2 s
    for src in (Fraction(25), Fraction(30000, 1001), Fraction(60), Fraction(15), Fraction(48)):
        for n_src in range(60, 400, 7):
            for s, m, n in C.plan_shot(0, n_src, src, cfg)[0]:
                assert 48 <= n <= 96
                assert C.raw_frame_index({"src_start_frame": s, "src_fps_exact": str(src), "src_fps": float(src),
                                          "fps": 24, "src_n_frames": m}, n - 1) <= s + m - 1
    assert C.crop_box(1920, 1080, 160, 90) == [0, 0, 1920, 1080]
    assert C.crop_box(1080, 1920, 160, 90) == [0, 656, 1080, 608]
    assert C.crop_box(320, 240, 160, 90) == [0, 30, 320, 180]
    assert C.as_fraction(29.97003) == Fraction(30000, 1001) and C.as_fraction("24000/1001") == Fraction(24000, 1001)
    assert C.out_frame_count(61, Fraction(48), Fraction(24)) == 31                 # 30.5 rounds up, like ffmpeg


@pytest.mark.parametrize("key,val", [("clips.width", 161), ("clips.height", 0), ("clips.fps", 0),
                                     ("clips.min_seconds", -1), ("clips.max_seconds", 1.0),
                                     ("clips.trim_frames", -2), ("video.crf", 60), ("video.preset", "fastest"),
                                     ("video.threads", "1")])
def test_invalid_params_name_the_key(key, val):
    sect, k = key.split(".")
    params = json.loads(json.dumps(PARAMS))
    params[sect][k] = val
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        C.validate_params(params)


def test_mp4_index_facts_match_ffprobe(tmp_path):
    """clips checks every cut from the mp4's own index (no ffprobe process per clip)."""
    from genbuild.io.video import MediaError, mp4_video_facts, probe, write_video

    frames = np.zeros((7, 18, 32, 3), np.uint8)
    write_video(tmp_path / "c.mp4", frames, 24)
    info = probe(tmp_path / "c.mp4")
    assert mp4_video_facts(tmp_path / "c.mp4") == (info.n_frames, info.width, info.height) == (7, 32, 18)
    (tmp_path / "bad.mp4").write_bytes((tmp_path / "c.mp4").read_bytes()[:40])
    with pytest.raises(MediaError, match="no readable mp4 video index"):
        mp4_video_facts(tmp_path / "bad.mp4")
