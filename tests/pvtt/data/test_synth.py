"""Synth stage, route A: compositing along the old product's trajectory (real ffmpeg + OpenCV)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from genbuild.io.jsonio import read_json, read_jsonl, write_json
from genbuild.io.masks import load_masks, save_masks
from genbuild.io.video import probe, read_frames, write_png, write_video
from genbuild.metrics.classical import psnr
from pvtt.data import synth as S

ROOT = Path(__file__).resolve().parents[3]
PARAMS = {"seed": 1234, "synth": {"route": "A", "scale_margin": 0.95},
          "video": {"crf": 17, "preset": "medium", "threads": 1}}
N, H, W, FPS = 72, 90, 160, 24.0
RED, BLUE = np.array([220, 40, 40]), np.array([40, 60, 220])
GAP = (10, 13)   # frames whose original mask is empty (a detector miss)


def true_box(t: int) -> tuple[float, float, float, float]:
    """Old product: 30x40 box moving linearly left to right, [x0, y0, x1, y1)."""
    cx = 35.0 + (125.0 - 35.0) * t / (N - 1)
    return cx - 15, 25.0, cx + 15, 65.0


def make_background() -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    frames = np.empty((N, H, W, 3), np.uint8)
    for t in range(N):
        frames[t, ..., 0] = 90 + 60 * np.sin((x + t) / 23.0) * np.cos(y / 17.0)
        frames[t, ..., 1] = 120 + 50 * np.cos((x - y) / 31.0)
        frames[t, ..., 2] = 100 + 40 * np.sin(y / 13.0 + t / 20.0)
    return frames


def make_reference() -> np.ndarray:
    """Product RGBA: red top half, blue bottom half, elliptic alpha, transparent margin."""
    rgba = np.zeros((100, 60, 4), np.uint8)
    rgba[:50, :, :3] = RED
    rgba[50:, :, :3] = BLUE
    alpha = np.zeros((100, 60), np.uint8)
    cv2.ellipse(alpha, (30, 50), (22, 42), 0, 0, 360, 255, -1)
    rgba[..., 3] = alpha
    return rgba


def make_pair(pid: str, bg_rel: str, mask_rel: str, ref_rel: str) -> dict:
    return {"id": pid, "clip": "vid000_s00c0", "video": "vid000", "shot": 0, "product": pid.split("__")[1],
            "view": "view0", "source_product": "prod_watch", "category_from": "watch", "category_to": "bottle",
            "clip_path": "clips/vid000/vid000_s00c0.mp4", "mask_path": mask_rel, "background_path": bg_rel,
            "reference_path": ref_rel, "caption": "Replace the watch with a bottle; a watch on a table"}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    work = tmp_path_factory.mktemp("synth") / "work"
    bg = make_background()
    write_video(work / "backgrounds/vid000/vid000_s00c0.mp4", bg, FPS)
    masks = np.zeros((N, H, W), bool)
    for t in range(N):
        if GAP[0] <= t < GAP[1]:
            continue
        x0, y0, x1, y1 = (int(round(v)) for v in true_box(t))
        masks[t, y0:y1, x0:x1] = True
    save_masks(work / "masks/vid000/vid000_s00c0.npy.gz", masks)
    sparse = np.zeros_like(masks)
    sparse[: N // 2 - 1] = masks[: N // 2 - 1]                   # 37 + the 3 gap frames of 72 empty
    save_masks(work / "masks/vid000/sparse.npy.gz", sparse)
    write_png(work / "products/prod_bottle/view0.png", make_reference())
    (work / "products/prod_bad").mkdir(parents=True)
    (work / "products/prod_bad/view0.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    bgr, mr, rr = "backgrounds/vid000/vid000_s00c0.mp4", "masks/vid000/vid000_s00c0.npy.gz", "products/prod_bottle/view0.png"
    pairs = [
        make_pair("vid000_s00c0__prod_bottle_view0", bgr, mr, rr),
        make_pair("vid000_s00c0__prod_sparse_view0", bgr, "masks/vid000/sparse.npy.gz", rr),
        make_pair("vid000_s00c0__prod_bad_view0", bgr, mr, "products/prod_bad/view0.png"),
        make_pair("vid000_s00c0__prod_nobg_view0", "backgrounds/vid000/missing.mp4", mr, rr),
    ]
    write_json(work / "pairs/shard-0003.json", {"shard": 3, "pairs": pairs})
    out = work / "synth/shard-0003"
    t0 = time.perf_counter()
    S.main(["--params", json.dumps(PARAMS), "--work", str(work), "--pairs", str(work / "pairs/shard-0003.json"),
            "--out", str(out)])
    elapsed = time.perf_counter() - t0
    return {"work": work, "out": out, "bg": bg, "masks": masks, "elapsed": elapsed,
            "pid": "vid000_s00c0__prod_bottle_view0"}


def test_outputs_and_rejects(scene):
    out, pid = scene["out"], scene["pid"]
    assert sorted(p.name for p in out.iterdir()) == sorted([pid, "rejects.jsonl", "synth.json"])
    assert sorted(p.name for p in (out / pid).iterdir()) == ["edited.mp4", "mask.npy.gz", "meta.json"]
    s = read_json(out / "synth.json")
    assert s["shard"] == 3 and s["route"] == "A"
    assert s["pairs"] == {pid: {"status": "ok", "n_frames": N}}
    assert s["n_pairs"] == 4 and s["n_ok"] == 1 and s["n_rejected"] == 3
    rej = {r["item"]: r for r in read_jsonl(out / "rejects.jsonl")}
    assert rej["vid000_s00c0__prod_sparse_view0"]["reason"] == "too_many_empty_frames"
    assert rej["vid000_s00c0__prod_sparse_view0"]["empty"] == N - (N // 2 - 1) + (GAP[1] - GAP[0])
    assert rej["vid000_s00c0__prod_bad_view0"]["reason"] == "unreadable_reference"
    assert rej["vid000_s00c0__prod_nobg_view0"]["reason"] == "unreadable_background"
    assert all(r["stage"] == "synth" for r in rej.values())

    info = probe(out / pid / "edited.mp4")
    assert (info.width, info.height, info.n_frames) == (W, H, N)
    assert abs(info.fps - FPS) < 1e-6
    meta = read_json(out / pid / "meta.json")
    for k, v in make_pair(pid, "", "", "").items():
        if k not in ("mask_path", "background_path", "reference_path"):
            assert meta[k] == v
    assert (meta["n_frames"], meta["width"], meta["height"], meta["fps"], meta["route"]) == (N, W, H, FPS, "A")
    assert meta["bbox_smoothing"]["window"] == 5
    assert meta["bbox_smoothing"]["empty_frames"] == list(range(*GAP))
    assert len(meta["placed_bbox"]) == N


def test_new_mask_follows_old_trajectory(scene):
    new = load_masks(scene["out"] / scene["pid"] / "mask.npy.gz")
    assert new.shape == (N, H, W)
    margin = 2
    for t in range(N):                               # including the interpolated gap frames
        assert new[t].any(), t
        ys, xs = np.nonzero(new[t])
        x0, y0, x1, y1 = true_box(t)
        assert xs.min() >= x0 - margin and xs.max() + 1 <= x1 + margin, t
        assert ys.min() >= y0 - margin and ys.max() + 1 <= y1 + margin, t
        # Centred in the old box and about scale_margin x its fitting height (box 30x40, product ~ 45x85).
        assert abs((xs.min() + xs.max() + 1) / 2 - (x0 + x1) / 2) <= 1.0, t
        assert 0.85 * 40 <= ys.max() + 1 - ys.min() <= 40, t
    # Smooth: the placed centre moves by about the true speed every frame (no jitter).
    cx = np.array([(b[0] + b[2]) / 2 for b in read_json(scene["out"] / scene["pid"] / "meta.json")["placed_bbox"]])
    step = np.diff(cx)
    assert np.all(np.abs(step - 90.0 / (N - 1)) <= 1.0)


def test_composited_colours_and_untouched_background(scene):
    out, bg = scene["out"], scene["bg"]
    edited = read_frames(out / scene["pid"] / "edited.mp4")
    bg_dec = read_frames(scene["work"] / "backgrounds/vid000/vid000_s00c0.mp4")
    new = load_masks(out / scene["pid"] / "mask.npy.gz")
    assert edited.shape == bg.shape
    kernel = np.ones((5, 5), np.uint8)
    top_err, bot_err = [], []
    far = np.zeros((N, H, W), bool)
    for t in range(N):
        core = cv2.erode(new[t].astype(np.uint8), kernel).astype(bool)
        ys, xs = np.nonzero(core)
        mid = (ys.min() + ys.max()) / 2
        top = core & (np.arange(H)[:, None] < mid - 3)
        bot = core & (np.arange(H)[:, None] > mid + 3)
        top_err.append(np.abs(edited[t][top].astype(float).mean(0) - RED).max())
        bot_err.append(np.abs(edited[t][bot].astype(float).mean(0) - BLUE).max())
        x0, y0, x1, y1 = (int(round(v)) for v in true_box(t))
        near = new[t].astype(np.uint8)
        near[max(y0, 0):y1, max(x0, 0):x1] = 1
        far[t] = cv2.dilate(near, np.ones((17, 17), np.uint8)) == 0
    assert max(top_err) < 10 and max(bot_err) < 10, (max(top_err), max(bot_err))
    assert psnr(edited, bg_dec, far) > 38
    # And the product is really there: inside the new mask the edit differs from the background.
    assert psnr(edited, bg_dec, new) < 20


def test_deterministic_bytes(scene, tmp_path):
    out2 = tmp_path / "again"
    S.run(scene["work"], scene["work"] / "pairs/shard-0003.json", out2, PARAMS)
    for rel in [f"{scene['pid']}/edited.mp4", f"{scene['pid']}/mask.npy.gz", f"{scene['pid']}/meta.json",
                "synth.json", "rejects.jsonl"]:
        assert (scene["out"] / rel).read_bytes() == (out2 / rel).read_bytes(), rel


def test_fast_enough(scene, tmp_path):
    # The module fixture ran 4 pairs (1 synthesised) including decode + encode.
    assert scene["elapsed"] < 3.0, scene["elapsed"]
    route = S.ROUTES["A"](S.validate_params(PARAMS))
    pair = read_json(scene["work"] / "pairs/shard-0003.json")["pairs"][0]
    t0 = time.perf_counter()
    res = route.synthesize(pair, scene["work"])
    assert time.perf_counter() - t0 < 1.0
    assert res.frames.shape == (N, H, W, 3) and res.mask.shape == (N, H, W)


def test_half_empty_is_kept_and_ends_hold_last_box(scene):
    masks = scene["masks"].copy()
    masks[GAP[0]:GAP[1]] = scene["masks"][GAP[0] - 1]            # no gap here
    masks[N // 2:] = False                                       # exactly half the frames empty
    save_masks(scene["work"] / "masks/vid000/half.npy.gz", masks)
    pair = {**read_json(scene["work"] / "pairs/shard-0003.json")["pairs"][0], "mask_path": "masks/vid000/half.npy.gz"}
    route = S.ROUTES["A"](S.validate_params(PARAMS))
    res = route.synthesize(pair, scene["work"])
    assert res.meta["bbox_smoothing"]["interpolated_frames"] == N // 2
    tail = res.meta["placed_bbox"][N // 2 + 2:]                 # beyond the smoothing window's reach
    assert all(b == tail[0] for b in tail)                      # held at the last box, not extrapolated
    assert abs((tail[0][0] + tail[0][2]) / 2 - (true_box(N // 2 - 1)[0] + 15)) <= 1
    masks[N // 2 - 1] = False                                    # one more empty frame: rejected
    save_masks(scene["work"] / "masks/vid000/half.npy.gz", masks)
    with pytest.raises(S.SynthReject, match="too_many_empty_frames"):
        route.synthesize(pair, scene["work"])


def test_empty_shard_and_script(tmp_path):
    work = tmp_path / "work"
    write_json(work / "pairs/shard-0000.json", {"shard": 0, "pairs": []})
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "synth.py"), "--params", json.dumps(PARAMS),
                          "--work", str(work), "--pairs", str(work / "pairs/shard-0000.json"),
                          "--out", str(work / "synth/shard-0000")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = work / "synth/shard-0000"
    assert sorted(p.name for p in out.iterdir()) == ["rejects.jsonl", "synth.json"]
    assert read_json(out / "synth.json")["pairs"] == {}
    assert (out / "rejects.jsonl").read_text() == ""


@pytest.mark.parametrize("patch,key", [
    ({"synth": {"route": "B", "scale_margin": 0.95}}, "synth.route"),
    ({"synth": {"route": "A", "scale_margin": 0}}, "synth.scale_margin"),
    ({"synth": {"route": "A"}}, "synth.scale_margin"),
    ({"synth": {"route": "A", "scale_margin": 0.9, "smooth_window": 4}}, "synth.smooth_window"),
    ({"video": {"crf": 99, "preset": "medium", "threads": 1}}, "video.crf"),
    ({"video": {"crf": 17, "threads": 1}}, "video.preset"),
])
def test_invalid_params_name_the_key(patch, key, tmp_path):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        S.validate_params({**PARAMS, **patch})


def test_trajectory_helpers():
    # Linear motion survives the moving average exactly (the window shrinks at the ends).
    x = np.stack([np.arange(10) * 2.0 + 1, np.full(10, 5.0)], axis=1)
    np.testing.assert_allclose(S.centred_moving_average(x, 5), x)
    noisy = x.copy()
    noisy[4, 0] += 5
    sm = S.centred_moving_average(noisy, 5)
    assert abs(sm[4, 0] - x[4, 0]) == pytest.approx(1.0)
    m = np.zeros((5, 10, 12), bool)
    m[0, 2:4, 3:7] = True
    m[4, 4:6, 5:9] = True
    boxes, empty = S.mask_bboxes(m)
    assert empty.tolist() == [False, True, True, True, False]
    np.testing.assert_array_equal(boxes[0], [3, 2, 7, 4])
    tr = S.trajectory(boxes, empty, 1)
    np.testing.assert_allclose(tr[2], [6.0, 4.0, 4.0, 2.0])     # midway between the two boxes
