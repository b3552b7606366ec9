"""Masks stage: classical first-frame detection + optical-flow propagation.

The clips are synthetic product showcases made here with numpy (a saturated, textured
product moving and rotating over a muted, textured background under a camera pan/zoom),
encoded with the build's own ffmpeg writer, so the ground-truth masks are known exactly.
``make_showcase``/``write_clips_dir`` are reused by the maskqc and backgrounds tests.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from genbuild.io.jsonio import read_json, read_jsonl, write_json
from genbuild.io.masks import load_masks
from genbuild.io.video import read_frames, write_video
from genbuild.metrics.classical import iou, mean_frame_iou
from pvtt.data import masks as M

SS = 4  # supersampling of the renderer: edges are anti-aliased like a real downscaled video


def _hsv_rgb(h: float, s: float, v: float) -> np.ndarray:
    """One colour, h in degrees, s and v in [0, 1] -> float RGB in [0, 1]."""
    px = np.array([[[h / 2.0, s * 255.0, v * 255.0]]], dtype=np.float32)
    return cv2.cvtColor(px.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0


def _background_texture(rng: np.random.Generator, w: int, h: int, tint_hue: float, sat: float = 0.10,
                        lum: float = 0.45) -> np.ndarray:
    """A muted (low saturation) textured plane: blotches, fine grain and a faint tile pattern."""
    def smooth(sigma: float) -> np.ndarray:  # low-frequency noise, blurred at 1/8 size then upscaled
        small = cv2.GaussianBlur(rng.random((h // 8, w // 8)).astype(np.float32), (0, 0), sigma / 8)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)

    low = smooth(w / 40)
    low = (low - low.min()) / (np.ptp(low) + 1e-6)
    fine = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 2.0)
    fine = (fine - fine.mean()) / (fine.std() + 1e-6)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    tiles = ((np.sin(xx / (w / 24)) > 0.9) | (np.sin(yy / (h / 14)) > 0.9)).astype(np.float32)
    lum = lum + 0.25 * low + 0.04 * fine - 0.08 * tiles
    tint = _hsv_rgb(tint_hue, sat, 1.0)
    tint2 = _hsv_rgb((tint_hue + 40) % 360, 0.8 * sat, 1.0)
    mix = smooth(w / 15)
    mix = ((mix - mix.min()) / (np.ptp(mix) + 1e-6))[..., None]
    return np.clip(lum[..., None] * (tint * (1 - mix) + tint2 * mix), 0, 1)


def _shape_coverage(shape: str, u: np.ndarray, v: np.ndarray, size: float) -> np.ndarray:
    """Inside test in object coordinates (u, v), object half-height ``size``."""
    if shape == "ellipse":
        return (u / (0.75 * size)) ** 2 + (v / size) ** 2 <= 1.0
    if shape == "box":
        return (np.abs(u) <= 0.9 * size) & (np.abs(v) <= 0.7 * size)
    if shape == "bottle":
        body = (np.abs(u) <= 0.42 * size) & (v >= -0.35 * size) & (v <= size)
        shoulder = (u / (0.42 * size)) ** 2 + ((v + 0.35 * size) / (0.3 * size)) ** 2 <= 1.0
        neck = (np.abs(u) <= 0.16 * size) & (v >= -size) & (v <= -0.4 * size)
        return body | shoulder | neck
    if shape == "watch":
        face = u ** 2 + v ** 2 <= (0.55 * size) ** 2
        strap = (np.abs(u) <= 0.32 * size) & (np.abs(v) <= size)
        return face | strap
    if shape == "bag":
        body = (np.abs(u) <= 0.85 * size) & (v >= -0.35 * size) & (v <= 0.75 * size) & (np.abs(u) <= 0.85 * size - 0.25 * (0.75 * size - v))
        r = np.sqrt(u ** 2 + (v + 0.35 * size) ** 2)
        handle = (r >= 0.38 * size) & (r <= 0.52 * size) & (v <= -0.35 * size)
        return body | handle
    raise ValueError(shape)


def make_showcase(seed: int = 0, n_frames: int = 72, width: int = 160, height: int = 90,
                  shape: str = "ellipse", hue: float = 10.0, tint_hue: float = 200.0,
                  area: float = 0.10, product: bool = True, pan: tuple[float, float] = (0.35, 0.12),
                  zoom: float = 0.12, drift: tuple[float, float] = (0.25, -0.1), spin: float = 0.6,
                  sat: float = 0.85, val: float = 0.85, bg_sat: float = 0.10, bg_lum: float = 0.45,
                  start: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render (frames (N,H,W,3) uint8, gt masks (N,H,W) bool, clean backgrounds (N,H,W,3) uint8).

    Camera: pan ``pan`` px/frame and zoom by ``zoom`` over the clip; product: half-height
    chosen so it covers ~``area`` of the frame, drifts ``drift`` px/frame, spins ``spin``
    degrees/frame, saturated ``hue`` with stripes, grain and shading that move with it.
    """
    rng = np.random.default_rng(seed)
    W, H = width * SS, height * SS
    tex = _background_texture(rng, 2 * W, 2 * H, tint_hue, bg_sat, bg_lum)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    base = _hsv_rgb(hue, sat, val)
    dark = _hsv_rgb((hue + 12) % 360, min(1.0, sat * 1.05), val * 0.6)
    grain = cv2.GaussianBlur(rng.random((256, 256)).astype(np.float32), (0, 0), 3.0)
    grain = (grain - grain.mean()) / (grain.std() + 1e-6)
    unit = {"ellipse": 0.75 * math.pi, "box": 2.52, "bottle": 1.3, "watch": 1.5, "bag": 1.6}[shape]
    size = math.sqrt(area * W * H / unit)
    cx0, cy0 = W * (0.45 + 0.1 * rng.random()), H * (0.45 + 0.1 * rng.random())
    if start is not None:
        cx0, cy0 = start[0] * W, start[1] * H
    frames, masks, bgs = [], [], []
    for t in range(n_frames):
        s = 1.0 + zoom * t / max(n_frames - 1, 1)
        ox, oy = W / 2 + pan[0] * SS * t, H / 2 + pan[1] * SS * t
        # frame pixel p -> texture pixel (p - centre) / s + texture centre shifted by the pan
        A = np.array([[1 / s, 0, W - W / (2 * s) + (ox - W / 2)], [0, 1 / s, H - H / (2 * s) + (oy - H / 2)]], np.float32)
        bg = cv2.warpAffine(tex, A, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
        img = bg.copy()
        cov = np.zeros((H, W), np.float32)
        if product:
            cx, cy = cx0 + drift[0] * SS * t, cy0 + drift[1] * SS * t
            th = math.radians(spin * t + 15 * math.sin(t / 9))
            c, sn = math.cos(th), math.sin(th)
            r = 1.25 * size                                  # render only the product's box
            ya, yb = max(int(cy - r), 0), min(int(cy + r) + 1, H)
            xa, xb = max(int(cx - r), 0), min(int(cx + r) + 1, W)
            X, Y = xx[ya:yb, xa:xb], yy[ya:yb, xa:xb]
            u = c * (X - cx) + sn * (Y - cy)
            v = -sn * (X - cx) + c * (Y - cy)
            inside = _shape_coverage(shape, u, v, size)
            cov[ya:yb, xa:xb] = inside
            stripes = 0.5 + 0.5 * np.sin(u / (0.12 * size) + 0.5 * np.sin(v / (0.3 * size)))
            gi = grain[(np.abs(v / size * 60).astype(int)) % 256, (np.abs(u / size * 60).astype(int)) % 256]
            shade = 0.8 + 0.2 * np.cos(u / size * 1.3)
            col = (base * (1 - 0.5 * stripes[..., None]) + dark * 0.5 * stripes[..., None]) * shade[..., None]
            col = col * (1 + 0.06 * gi[..., None])
            if shape == "watch":
                face = (u ** 2 + v ** 2 <= (0.4 * size) ** 2)[..., None]
                col = np.where(face, _hsv_rgb(hue, 0.45, 0.95) * (1 + 0.05 * gi[..., None]), col)
            img[ya:yb, xa:xb] = np.where(inside[..., None], np.clip(col, 0, 1), bg[ya:yb, xa:xb])
        small = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
        frames.append(np.clip(small * 255 + 0.5, 0, 255).astype(np.uint8))
        bgs.append(np.clip(cv2.resize(bg, (width, height), interpolation=cv2.INTER_AREA) * 255 + 0.5, 0, 255).astype(np.uint8))
        masks.append(cv2.resize(cov, (width, height), interpolation=cv2.INTER_AREA) > 0.5)
    return np.stack(frames), np.stack(masks), np.stack(bgs)


CLIP_SPECS = {
    "c000": dict(seed=1, shape="ellipse", hue=10, tint_hue=200, area=0.10),
    "c001": dict(seed=2, shape="bottle", hue=120, tint_hue=30, area=0.07, pan=(-0.4, 0.1), zoom=-0.1),
    "c002": dict(seed=3, shape="watch", hue=220, tint_hue=60, area=0.14, drift=(-0.3, 0.15), spin=-0.8),
    "c003": dict(seed=4, shape="box", hue=290, tint_hue=100, area=0.18, pan=(0.2, -0.2), zoom=0.2),
    "c004": dict(seed=5, shape="bag", hue=45, tint_hue=250, area=0.08, spin=1.0),
}


def write_clips_dir(root: Path, video: str = "v000", specs: dict | None = None, fps: float = 24.0,
                    n_frames: int = 72) -> tuple[Path, dict]:
    """Write work/clips/<video>/ (clips.json + <clip>.mp4); return (dir, {clip_id: (frames, gt, bg)})."""
    specs = CLIP_SPECS if specs is None else specs
    d = root / "clips" / video
    d.mkdir(parents=True, exist_ok=True)
    clips, truth = [], {}
    for i, (cid, spec) in enumerate(sorted(specs.items())):
        frames, gt, bg = make_showcase(n_frames=n_frames, **spec)
        write_video(d / f"{cid}.mp4", frames, fps, crf=17)
        truth[cid] = (read_frames(d / f"{cid}.mp4"), gt, bg)
        n, h, w = gt.shape
        clips.append({"id": cid, "video": video, "shot": i, "path": f"{cid}.mp4", "src_start_frame": 0,
                      "src_fps": fps, "n_frames": n, "fps": fps, "width": w, "height": h, "duration": n / fps})
    write_json(d / "clips.json", {"video": video, "status": "ok", "clips": clips})
    return d, truth


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("work")
    specs = dict(CLIP_SPECS)
    specs["c005"] = dict(seed=6, product=False, tint_hue=150)  # plain background: nothing to find
    d, truth = write_clips_dir(root, specs=specs)
    return root, d, truth


PARAMS = {"masks": {"backend": "classical", "min_area_frac": 0.003}}


@pytest.fixture(scope="module")
def stage(clips):
    root, d, truth = clips
    out = root / "masks" / "v000"
    t0 = time.perf_counter()
    M.main(["--params", json.dumps(PARAMS), "--clips", str(d), "--out", str(out)])
    return out, time.perf_counter() - t0


def test_classical_masks_match_ground_truth(clips, stage):
    root, d, truth = clips
    out, _ = stage
    info = read_json(out / "masks.json")
    assert info["video"] == "v000"
    assert sorted(info["clips"]) == ["c000", "c001", "c002", "c003", "c004"]
    scores = {}
    for cid, entry in info["clips"].items():
        pred = load_masks(out / f"{cid}.npy.gz")
        gt = truth[cid][1]
        assert pred.shape == gt.shape and entry["n_frames"] == len(gt)
        assert entry["backend"] == "classical"
        scores[cid] = mean_frame_iou(pred, gt)
        assert min(iou(p, g) for p, g in zip(pred, gt)) >= 0.75, cid
    print("IoU", scores)
    assert all(s >= 0.85 for s in scores.values()), scores
    assert np.mean(list(scores.values())) >= 0.9, scores


def test_masks_json_stats_agree_with_masks(clips, stage):
    out, _ = stage
    info = read_json(out / "masks.json")
    for cid, entry in info["clips"].items():
        m = load_masks(out / f"{cid}.npy.gz")
        assert len(entry["area_frac"]) == len(entry["bbox"]) == len(m)
        for t in (0, len(m) // 2, len(m) - 1):
            assert entry["area_frac"][t] == pytest.approx(m[t].mean(), abs=1e-6)
            ys, xs = np.nonzero(m[t])
            assert entry["bbox"][t] == [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def test_absent_product_is_rejected_and_stage_completes(stage):
    out, _ = stage
    rows = read_jsonl(out / "rejects.jsonl")
    assert [(r["stage"], r["item"], r["reason"]) for r in rows] == [("masks", "c005", "no product detected")]
    assert not (out / "c005.npy.gz").exists()


def test_runtime_is_small(stage):
    _, seconds = stage
    assert seconds < 6 * 3.0, seconds  # 6 clips of 72 frames, decoding included (~0.3 s each unloaded)


def test_rerun_is_byte_identical(clips, stage, tmp_path):
    root, d, _ = clips
    out, _ = stage
    again = tmp_path / "again"
    M.main(["--params", json.dumps(PARAMS), "--clips", str(d), "--out", str(again)])
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for n in names:
        assert (out / n).read_bytes() == (again / n).read_bytes(), n


def test_detection_on_a_single_frame(clips):
    _, _, truth = clips
    frames, gt, _ = truth["c002"]
    m = M.detect_product(frames[0], min_area_frac=0.003)
    assert iou(m, gt[0]) >= 0.85
    frames, _, _ = truth["c005"]
    assert not M.detect_product(frames[0], min_area_frac=0.003).any()


def test_corrupt_clip_is_rejected(tmp_path):
    d, _ = write_clips_dir(tmp_path, specs={"c000": CLIP_SPECS["c000"]}, n_frames=24)
    (d / "c000.mp4").write_bytes(b"not a video")
    info = read_json(d / "clips.json")
    info["clips"].append(dict(info["clips"][0], id="c001", path="c001.mp4"))  # listed, never written
    write_json(d / "clips.json", info)
    out = tmp_path / "masks"
    M.main(["--params", json.dumps(PARAMS), "--clips", str(d), "--out", str(out)])
    assert read_json(out / "masks.json")["clips"] == {}
    rows = read_jsonl(out / "rejects.jsonl")
    assert [r["item"] for r in rows] == ["c000", "c001"]
    assert all(r["reason"].startswith("unreadable clip") for r in rows)


def test_empty_clip_list_writes_empty_outputs(tmp_path):
    d = tmp_path / "clips" / "v9"
    d.mkdir(parents=True)
    write_json(d / "clips.json", {"video": "v9", "status": "rejected", "clips": []})
    out = tmp_path / "masks"
    M.main(["--params", json.dumps(PARAMS), "--clips", str(d), "--out", str(out)])
    assert read_json(out / "masks.json") == {"video": "v9", "clips": {}}
    assert (out / "rejects.jsonl").read_text() == ""


@pytest.mark.parametrize("params, key", [
    ({"masks": {"backend": "sam9"}}, "masks.backend"),
    ({"masks": {"min_area_frac": 1.5}}, "masks.min_area_frac"),
    ({"masks": {"min_area_frac": "x"}}, "masks.min_area_frac"),
    ({"masks": {"bogus": 1}}, "masks.bogus"),
])
def test_invalid_params_name_the_key(params, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        M.validate_params(params)


def test_unknown_backend_lists_known_names():
    with pytest.raises(ValueError, match="classical"):
        M.get_backend("sam9", {})


def test_embedded_sample_products(tmp_path):
    """The build's own sample generator (pvtt.data.sample): one shot per category, downscaled to
    the clip size and re-encoded like the clips stage does, against its exact masks."""
    from pvtt.data import sample as S

    sp = {**S.DEFAULT_SAMPLE, "n_videos": 4, "n_products": 4, "cuts_per_video": [0, 0], "shot_seconds": [3.0, 3.0]}
    scores = {}
    for spec in S.video_specs(sp, S.make_catalogue(1234, 4)):
        frames, truth, _ = S.render_video(spec, sp, 1234, S.render_product(spec.product, 0, 2))
        write_video(tmp_path / "src.mp4", frames, spec.fps)
        write_video(tmp_path / "clip.mp4", read_frames(tmp_path / "src.mp4", size=(160, 90)), spec.fps)
        clip = read_frames(tmp_path / "clip.mp4")
        gt = np.stack([cv2.resize(m.astype(np.float32), (160, 90), interpolation=cv2.INTER_AREA) > 0.5 for m in truth])
        pred = M.ClassicalMaskBackend({"min_area_frac": 0.003}).segment(clip)
        scores[spec.product.category] = mean_frame_iou(pred, gt)
    print("sample IoU", {k: round(v, 3) for k, v in scores.items()})
    assert sorted(scores) == ["bag", "bottle", "box", "watch"]
    assert all(v >= 0.88 for v in scores.values()), scores
    assert np.mean(list(scores.values())) >= 0.92, scores
