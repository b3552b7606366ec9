"""Backgrounds stage: remove the product from every kept clip.

    python scripts/backgrounds.py --params '{"backgrounds": {...}, "video": {...}}' --clips work/clips/B \\
        --masks work/masks/B --maskqc work/maskqc/B --videos V1 V2 ... --out work/backgrounds/B

writes ``OUT/<video>/<clip_id>.mp4`` (same size, frame rate and frame count as the clip),
``OUT/<video>/backgrounds.json`` and ``OUT/<video>/rejects.jsonl``. Only clips that mask QC kept are
processed; the others are simply absent.

The removal is a backend chosen by ``backgrounds.backend``. The weight-free ``opencv``
backend fills the (dilated) product region of frame t from the nearest frame within
``temporal_window`` in which that background point was visible, after aligning the frames
by the global camera motion (a similarity transform fitted with RANSAC to background
corners tracked by Lucas-Kanade), and inpaints what no frame saw with ``cv2.inpaint``
(Telea, ``radius``). Pixels outside the dilated mask are passed through unchanged.
The real backend ``wan_vace`` (Wan2.1 VACE video inpainting through DiffSynth, local weights
under ``backgrounds.vace``) lives in :mod:`pvtt.data.backends.wan_vace` and registers itself in
:data:`BACKENDS` when this module is imported (torch/diffsynth load only when it is built).
"""
from __future__ import annotations

import abc
import logging
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from genbuild import stage as cli
from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import read_json, write_json
from genbuild.io.rejects import Rejects
from genbuild.io.video import MediaError, probe, write_video
from genbuild.registry import Registry
from pvtt.data import vbatch
from pvtt.data.masks import load_clip_and_masks

log = logging.getLogger("pvtt.data.backgrounds")

STAGE = "backgrounds"
DEFAULTS: dict[str, Any] = {"backend": "opencv", "dilate": 3, "radius": 3, "temporal_window": 12,
                            "vace": None}   # wan_vace settings (pvtt.data.backends.wan_vace.VACE_DEFAULTS)
VIDEO_DEFAULTS: dict[str, Any] = {"crf": 17, "preset": "medium", "threads": 1}
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")


# --------------------------------------------------------------------------- backends

class BackgroundBackend(abc.ABC):
    """Removes the masked product: frames (N, H, W, 3) uint8 RGB + masks (N, H, W) bool ->
    (clean frames (N, H, W, 3) uint8, info dict with at least ``filled_from_time_frac``)."""

    name: str = ""

    def __init__(self, cfg: dict):
        self.cfg = cfg

    @abc.abstractmethod
    def remove(self, frames: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, dict]:
        ...


BACKENDS = Registry("backgrounds.backend")
register = BACKENDS.register


def get_backend(name: str, cfg: dict) -> BackgroundBackend:
    return BACKENDS.create(name, cfg)


# --------------------------------------------------------------------------- camera motion

def _h(a: np.ndarray) -> np.ndarray:
    return np.vstack([a, [0.0, 0.0, 1.0]])


def pair_motion(src: np.ndarray, dst: np.ndarray, src_bg: np.ndarray) -> np.ndarray:
    """2x3 similarity A with dst(A x) ~ src(x), fitted on background corners of ``src``.

    Falls back to the phase-correlation translation when too few corners track, and to
    the identity when that fails too.
    """
    g0 = cv2.cvtColor(src, cv2.COLOR_RGB2GRAY)
    g1 = cv2.cvtColor(dst, cv2.COLOR_RGB2GRAY)
    pts = cv2.goodFeaturesToTrack(g0, maxCorners=400, qualityLevel=0.005, minDistance=3,
                                  mask=src_bg.astype(np.uint8) * 255, blockSize=5)
    if pts is not None and len(pts) >= 8:
        nxt, st, _ = cv2.calcOpticalFlowPyrLK(g0, g1, pts, None, winSize=(15, 15), maxLevel=2,
                                              criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
        ok = st.ravel() == 1
        if ok.sum() >= 8:
            a, inl = cv2.estimateAffinePartial2D(pts[ok], nxt[ok], method=cv2.RANSAC, ransacReprojThreshold=1.0,
                                                 maxIters=2000, confidence=0.995, refineIters=10)
            if a is not None and inl is not None and inl.sum() >= 6:
                return a.astype(np.float64)
    win = cv2.createHanningWindow(g0.shape[::-1], cv2.CV_64F)
    (dx, dy), resp = cv2.phaseCorrelate(g0.astype(np.float64), g1.astype(np.float64), win)
    if resp > 0.05:
        return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])
    return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def camera_motion(frames: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """(N, 3, 3) transforms T[t] mapping frame-t pixel coordinates to frame-0 coordinates."""
    n = len(frames)
    out = np.repeat(np.eye(3)[None], n, axis=0)
    for t in range(1, n):
        a = pair_motion(frames[t], frames[t - 1], ~holes[t])  # frame t -> frame t-1
        out[t] = out[t - 1] @ _h(a)
    return out


# --------------------------------------------------------------------------- filling

def temporal_fill(frames: np.ndarray, holes: np.ndarray, motion: np.ndarray, window: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Fill ``holes`` of each frame from the nearest frame (|s - t| <= window) that saw the
    same background point uncovered; returns (frames, holes still unfilled)."""
    n, h, w = holes.shape
    out = frames.copy()
    left = holes.copy()
    visible = (~holes).astype(np.uint8)
    inv = np.linalg.inv(motion)
    for t in range(n):
        if not left[t].any():
            continue
        ys, xs = np.nonzero(left[t].any(axis=1))[0], np.nonzero(left[t].any(axis=0))[0]
        y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1   # work on the hole's bounding box
        roi_left = left[t, y0:y1, x0:x1]                          # a view: updates land in ``left``
        roi_out = out[t, y0:y1, x0:x1]
        for d in range(1, window + 1):
            for s in (t - d, t + d):
                if not 0 <= s < n:
                    continue
                a = (inv[s] @ motion[t])[:2]                      # frame-t pixel -> frame-s pixel
                a[:, 2] += a[:, :2] @ np.array([x0, y0], np.float64)
                size = (int(x1 - x0), int(y1 - y0))
                seen = cv2.warpAffine(visible[s], a, size, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                                      borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
                take = roi_left & seen
                if not take.any():
                    continue
                src = cv2.warpAffine(frames[s], a, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                     borderMode=cv2.BORDER_REPLICATE)
                roi_out[take] = src[take]
                roi_left &= ~take
            if not roi_left.any():
                break
    return out, left


@register("opencv")
class OpenCVBackground(BackgroundBackend):
    """Camera-aligned temporal fill, then Telea inpainting of what no frame saw (no weights)."""

    def remove(self, frames: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, dict]:
        d = int(self.cfg.get("dilate", DEFAULTS["dilate"]))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * d + 1, 2 * d + 1))
        holes = np.stack([cv2.dilate(m.astype(np.uint8), kernel).astype(bool) if d > 0 else m.astype(bool)
                          for m in masks])
        total = int(holes.sum())
        motion = camera_motion(frames, holes)
        out, left = temporal_fill(frames, holes, motion, int(self.cfg.get("temporal_window", DEFAULTS["temporal_window"])))
        radius = float(self.cfg.get("radius", DEFAULTS["radius"]))
        for t in range(len(out)):
            if left[t].any():
                bgr = cv2.cvtColor(out[t], cv2.COLOR_RGB2BGR)
                bgr = cv2.inpaint(bgr, left[t].astype(np.uint8), radius, cv2.INPAINT_TELEA)
                out[t] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        out[~holes] = frames[~holes]
        frac = 1.0 - float(left.sum()) / total if total else 0.0
        return out, {"filled_from_time_frac": round(frac, 4), "hole_frac": round(total / holes.size, 6)}


# --------------------------------------------------------------------------- stage

def _int_param(cfg: dict, sec: str, key: str, lo: int, hi: int | None = None) -> int:
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v < lo or (hi is not None and v > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"params key '{sec}.{key}' must be an integer {rng}, got {v!r}")
    return int(v)


def validate_params(params: dict) -> tuple[dict, dict]:
    """(``backgrounds`` section, ``video`` section) merged over the defaults; bad values
    raise ValueError naming the key."""
    out = []
    for sec, defaults in (("backgrounds", DEFAULTS), ("video", VIDEO_DEFAULTS)):
        s = params.get(sec, {}) if isinstance(params, dict) else None
        if not isinstance(s, dict):
            raise ValueError(f"params key '{sec}' must be a mapping")
        unknown = sorted(set(s) - set(defaults))
        if unknown:
            raise ValueError(f"params key '{sec}.{unknown[0]}' is not known (known: {', '.join(sorted(defaults))})")
        out.append({**defaults, **s})
    bg, video = out
    BACKENDS.check(bg["backend"])
    bg["dilate"] = _int_param(bg, "backgrounds", "dilate", 0, 64)
    bg["temporal_window"] = _int_param(bg, "backgrounds", "temporal_window", 0, 10000)
    r = bg["radius"]
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 64:
        raise ValueError(f"params key 'backgrounds.radius' must be a number in (0, 64], got {r!r}")
    bg["vace"] = _wan_vace.validate_config(bg["vace"])      # checked whichever backend runs (cheap, no files)
    video["crf"] = _int_param(video, "video", "crf", 0, 51)
    video["threads"] = _int_param(video, "video", "threads", 0, 256)
    if video["preset"] not in X264_PRESETS:
        raise ValueError(f"params key 'video.preset' must be one of {', '.join(X264_PRESETS)}, got {video['preset']!r}")
    return bg, video


def run(clips_dir: str | Path, masks_dir: str | Path, maskqc_dir: str | Path, out: str | Path, params: dict,
        backend: BackgroundBackend | None = None) -> dict:
    """Clean backgrounds of the clips kept by mask QC; return what backgrounds.json holds.

    ``backend``: one already made from params (a batch loads its model once)."""
    cfg, vcfg = validate_params(params)
    backend = backend or get_backend(cfg["backend"], cfg)
    clips_dir, masks_dir, maskqc_dir = Path(clips_dir), Path(masks_dir), Path(maskqc_dir)
    qc = read_json(maskqc_dir / "qc.json")
    masks_index = read_json(masks_dir / "masks.json")
    clips_index = read_json(clips_dir / "clips.json")
    clips = {c["id"]: c for c in clips_index.get("clips") or []}
    video = qc.get("video") or clips_index.get("video") or clips_dir.name
    rejects = Rejects(STAGE)
    result: dict = {"video": video, "clips": {}}
    kept = sorted(cid for cid, c in (qc.get("clips") or {}).items() if c.get("kept"))
    with atomic_path(out, directory=True) as tmp:
        for i, cid in enumerate(kept):
            t0 = time.perf_counter()
            clip = clips.get(cid)
            if clip is None:
                rejects.add(cid, "clip missing: not listed in clips.json")
                continue
            mentry = (masks_index.get("clips") or {}).get(cid, {})
            loaded = load_clip_and_masks(clips_dir / clip["path"], masks_dir / mentry.get("path", f"{cid}.npy.gz"),
                                         cid, rejects)
            if loaded is None:
                continue
            frames, masks = loaded
            try:
                fps = float(clip.get("fps") or probe(clips_dir / clip["path"], count_frames=False).fps)
            except MediaError as e:
                rejects.add(cid, f"unreadable clip: {e}")
                continue
            clean, info = backend.remove(frames, masks)
            try:
                write_video(tmp / f"{cid}.mp4", clean, fps, crf=vcfg["crf"], preset=vcfg["preset"], threads=vcfg["threads"])
            except (MediaError, ValueError) as e:
                rejects.add(cid, f"encode failed: {e}")
                continue
            result["clips"][cid] = {"n_frames": int(len(clean)), "filled_from_time_frac": info["filled_from_time_frac"],
                                    "backend": backend.name, "path": f"{cid}.mp4"}
            log.info("%s %s (%d/%d): %d frames, %.0f%% of the hole filled from other frames, %.2fs", video, cid,
                     i + 1, len(kept), len(clean), 100 * info["filled_from_time_frac"], time.perf_counter() - t0)
        write_json(tmp / "backgrounds.json", result)
        rejects.write(tmp / "rejects.jsonl")
    log.info("%s: %d backgrounds, %d rejected %s", video, len(result["clips"]), len(rejects), rejects.by_reason())
    return result


def main(argv: list[str] | None = None) -> None:
    cli.setup_logging()
    ap = cli.parser("Product-free background videos for the clips of one batch of videos kept by mask QC.")
    ap.add_argument("--clips", required=True, help="the batch's clips, work/clips/<batch>")
    ap.add_argument("--masks", required=True, help="the batch's masks, work/masks/<batch>")
    ap.add_argument("--maskqc", required=True, help="the batch's mask QC, work/maskqc/<batch>")
    ap.add_argument("--videos", nargs="+", help="ids of the batch's videos (without: one video, the paths are its own)")
    ap.add_argument("--out", required=True, help="the batch's directory, work/backgrounds/<batch>")
    args = ap.parse_args(argv)
    cfg, _ = validate_params(args.params)
    backend = get_backend(cfg["backend"], cfg)  # once per batch: a real backend loads its weights once
    if args.videos is None:
        run(args.clips, args.masks, args.maskqc, args.out, args.params, backend=backend)
        return
    clips, masks, qc = Path(args.clips), Path(args.masks), Path(args.maskqc)
    vbatch.run_videos(STAGE, args.out, args.videos,
                      lambda v, out: run(clips / v, masks / v, qc / v, out, args.params, backend=backend),
                      "backgrounds.json", lambda v, reason: {"video": v, "status": "rejected", "reason": reason,
                                                             "clips": {}})


from pvtt.data.backends import wan_vace as _wan_vace  # noqa: E402,F401  (registers "wan_vace")
