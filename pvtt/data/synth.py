"""Synth: background video + new product RGBA + old product trajectory -> ground-truth edit.

Routes are backends behind one small interface (``Route.synthesize(pair, work)``), chosen
by ``synth.route`` from the ``ROUTES`` registry:

- ``A`` (alias ``composite``): weight-free compositing. The old product's per-frame bbox
  (from its masks) is the trajectory: empty-mask frames are interpolated from their
  neighbours, centre and size are smoothed with a centred moving average
  (``synth.smooth_window`` frames, shrinking at the clip ends so linear motion is kept
  exactly), and the new product, cropped to its alpha, is scaled to ``synth.scale_margin``
  x the size that fits inside that box (aspect kept) and alpha-composited (premultiplied)
  onto the inpainted background.
- ``flux_wan_i2v`` (route B): route A's composite, then a FLUX.1 edit of its first frame over
  the product region (``synth.flux``), then Wan2.1 image-to-video from that frame for the
  clip's frame count (``synth.i2v``); same ``SynthResult``, mask = route A's alpha track.
  It lives in :mod:`pvtt.data.backends.flux_wan_i2v` (DiffSynth, local weights; torch loads only
  when the route is built) and registers itself with ``@register_route("flux_wan_i2v")``.

Outputs (``--out`` directory, written atomically)::

    <pair_id>/edited.mp4     same size / fps / frame count as the clip (H.264, bit-exact)
    <pair_id>/mask.npy.gz    (N, H, W) new product mask (composited alpha > 0.5)
    <pair_id>/meta.json      pair fields + n_frames, fps, width, height, route, bbox_smoothing, ...
    synth.json               {"shard", "route", "n_pairs", "n_ok", "n_rejected", "pairs": {id: {"status": "ok", "n_frames"}}}
    rejects.jsonl            stage "synth": unreadable inputs, too many empty frames, ...
"""
from __future__ import annotations

import gzip
import logging
import math
import shutil
import time
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from genbuild import stage as cli
from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import read_json, write_json
from genbuild.io.masks import load_masks, save_masks
from genbuild.io.rejects import Rejects
from genbuild.io.video import MediaError, probe, read_frames, read_image, write_video
from genbuild.registry import Registry

log = logging.getLogger(__name__)

STAGE = "synth"
REQUIRED_PAIR_FIELDS = ("id", "clip", "video", "product", "view", "background_path", "mask_path", "reference_path")


class SynthReject(Exception):
    """A pair that cannot be synthesised; ``reason`` goes to rejects.jsonl."""

    def __init__(self, reason: str, **details: Any):
        super().__init__(f"{reason} {details}" if details else reason)
        self.reason = reason
        self.details = details


@dataclass
class SynthResult:
    frames: np.ndarray          # (N, H, W, 3) uint8 RGB
    mask: np.ndarray            # (N, H, W) bool, the new product
    fps: float
    meta: dict = field(default_factory=dict)  # route-specific facts merged into meta.json


# ----------------------------------------------------------------------------- params

def _number(params: dict, dotted: str, lo: float, hi: float, default: Any = ...) -> float:
    try:
        v = cli.get(params, dotted, default)
    except KeyError as e:
        raise ValueError(str(e.args[0])) from None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise ValueError(f"params key '{dotted}' must be a number in [{lo}, {hi}], got {v!r}")
    return v


def _integer(params: dict, dotted: str, lo: int, hi: int, default: Any = ...) -> int:
    v = _number(params, dotted, lo, hi, default)
    if not isinstance(v, int):
        raise ValueError(f"params key '{dotted}' must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def validate_params(params: dict) -> dict:
    """Check what synth reads; return {"route", "scale_margin", "smooth_window", "crf", "preset", "threads",
    "flux", "i2v"} (the last two: route B's sections merged over their defaults)."""
    if not isinstance(params, dict):
        raise ValueError("params must be a mapping")
    try:
        route = cli.get(params, "synth.route")
    except KeyError as e:
        raise ValueError(str(e.args[0])) from None
    ROUTES.check(route)
    scale_margin = float(_number(params, "synth.scale_margin", 1e-3, 1.0))
    if scale_margin <= 0:
        raise ValueError("params key 'synth.scale_margin' must be > 0")
    window = _integer(params, "synth.smooth_window", 1, 99, default=5)
    if window % 2 == 0:
        raise ValueError(f"params key 'synth.smooth_window' must be odd (a centred window), got {window}")
    crf = _integer(params, "video.crf", 0, 51)
    try:
        preset = cli.get(params, "video.preset")
    except KeyError as e:
        raise ValueError(str(e.args[0])) from None
    if not isinstance(preset, str) or not preset:
        raise ValueError(f"params key 'video.preset' must be an x264 preset name, got {preset!r}")
    threads = _integer(params, "video.threads", 1, 256)
    flux, i2v = _flux_wan_i2v.validate_sections(params)   # route B's sections; checked whichever route runs
    return {"route": route, "scale_margin": scale_margin, "smooth_window": window,
            "crf": crf, "preset": preset, "threads": threads, "flux": flux, "i2v": i2v}


# ----------------------------------------------------------------------------- routes

ROUTES = Registry("synth.route", "route")
register_route = ROUTES.register


class Route(ABC):
    """One way of producing the edited video of a pair. Raise SynthReject for bad items."""

    name = "?"

    def __init__(self, settings: dict):
        self.settings = settings

    @abstractmethod
    def synthesize(self, pair: dict, work: Path) -> SynthResult:
        ...


# ----------------------------------------------------------------------------- trajectory

def mask_bboxes(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame bbox [x0, y0, x1, y1) (exclusive ends, float) of (N, H, W) masks, and the empty flags."""
    masks = np.asarray(masks, dtype=bool)
    n, h, w = masks.shape
    cols = masks.any(axis=1)                 # (N, W)
    rows = masks.any(axis=2)                 # (N, H)
    empty = ~cols.any(axis=1)
    x0 = cols.argmax(axis=1)
    x1 = w - cols[:, ::-1].argmax(axis=1)
    y0 = rows.argmax(axis=1)
    y1 = h - rows[:, ::-1].argmax(axis=1)
    boxes = np.stack([x0, y0, x1, y1], axis=1).astype(np.float64)
    boxes[empty] = np.nan
    return boxes, empty


def centred_moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along axis 0; the window shrinks symmetrically at the ends."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if window <= 1 or n <= 2:
        return x.copy()
    idx = np.arange(n)
    half = np.minimum(np.minimum(idx, n - 1 - idx), window // 2)
    csum = np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(x, axis=0)], axis=0)
    lo, hi = idx - half, idx + half + 1
    cnt = (hi - lo).reshape((-1,) + (1,) * (x.ndim - 1))
    return (csum[hi] - csum[lo]) / cnt


def trajectory(boxes: np.ndarray, empty: np.ndarray, window: int) -> np.ndarray:
    """(N, 4) [cx, cy, w, h]: empty frames interpolated linearly from neighbours, then smoothed."""
    n = len(boxes)
    good = ~empty
    if not good.any():
        raise ValueError("no non-empty frame to build a trajectory from")
    cxcywh = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                       boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
    t = np.arange(n)
    filled = np.stack([np.interp(t, t[good], cxcywh[good, k]) for k in range(4)], axis=1)
    return centred_moving_average(filled, window)


def crop_to_alpha(rgba: np.ndarray) -> np.ndarray:
    a = rgba[..., 3] > 0
    if not a.any():
        raise SynthReject("empty_reference")
    ys, xs = np.nonzero(a.any(axis=1))[0], np.nonzero(a.any(axis=0))[0]
    return rgba[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1]


def _round(v: float) -> int:
    return int(math.floor(v + 0.5))


def composite_track(background: np.ndarray, rgba: np.ndarray, track: np.ndarray,
                    scale_margin: float) -> tuple[np.ndarray, np.ndarray, list]:
    """Alpha-composite ``rgba`` onto each background frame along ``track`` ([cx, cy, w, h] per frame).

    Returns (frames uint8 (N, H, W, 3), alpha float32 (N, H, W), placed boxes [x0, y0, x1, y1) or None).
    """
    n, H, W, _ = background.shape
    rh, rw = rgba.shape[:2]
    pm = rgba.astype(np.float32) / 255.0
    pm[..., :3] *= pm[..., 3:4]               # premultiplied: resizing does not bleed transparent colour
    out = background.copy()
    alpha = np.zeros((n, H, W), dtype=np.float32)
    placed: list = []
    cache: dict[tuple[int, int], np.ndarray] = {}
    for i in range(n):
        cx, cy, bw, bh = (float(v) for v in track[i])
        s = scale_margin * min(max(bw, 0.0) / rw, max(bh, 0.0) / rh)
        nw, nh = max(1, _round(rw * s)), max(1, _round(rh * s))
        small = cache.get((nw, nh))
        if small is None:
            interp = cv2.INTER_AREA if (nw < rw or nh < rh) else cv2.INTER_LINEAR
            small = cv2.resize(pm, (nw, nh), interpolation=interp)
            cache[(nw, nh)] = small
        x0, y0 = _round(cx - nw / 2.0), _round(cy - nh / 2.0)
        fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + nw, W), min(y0 + nh, H)
        if fx0 >= fx1 or fy0 >= fy1:
            placed.append(None)
            continue
        placed.append([x0, y0, x0 + nw, y0 + nh])
        sub = small[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
        a = sub[..., 3:4]
        region = out[i, fy0:fy1, fx0:fx1].astype(np.float32) / 255.0
        comp = sub[..., :3] + region * (1.0 - a)
        out[i, fy0:fy1, fx0:fx1] = np.clip(comp * 255.0 + 0.5, 0, 255).astype(np.uint8)
        alpha[i, fy0:fy1, fx0:fx1] = a[..., 0]
    return out, alpha, placed


@register_route("A", "composite")
class CompositeRoute(Route):
    """Route A: composite the new product along the old product's smoothed trajectory."""

    name = "A"

    def synthesize(self, pair: dict, work: Path) -> SynthResult:
        bg_path = work / pair["background_path"]
        try:
            info = probe(bg_path, count_frames=False)
            bg = read_frames(bg_path, size=(info.width, info.height))
        except MediaError as e:
            raise SynthReject("unreadable_background", error=str(e)) from None
        try:
            masks = load_masks(work / pair["mask_path"])
        except (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile) as e:
            raise SynthReject("unreadable_mask", error=f"{e.__class__.__name__}: {e}") from None
        if masks.ndim != 3 or masks.shape[1:] != bg.shape[1:3]:
            raise SynthReject("mask_shape_mismatch", mask_shape=list(masks.shape), video_shape=list(bg.shape[:3]))
        if len(masks) != len(bg):
            raise SynthReject("frame_count_mismatch", mask_frames=int(len(masks)), video_frames=int(len(bg)))
        try:
            rgba = read_image(work / pair["reference_path"], mode="RGBA")
        except MediaError as e:
            raise SynthReject("unreadable_reference", error=str(e)) from None
        rgba = crop_to_alpha(rgba)

        n = len(bg)
        boxes, empty = mask_bboxes(masks)
        n_empty = int(empty.sum())
        if 2 * n_empty > n:
            raise SynthReject("too_many_empty_frames", empty=n_empty, n_frames=n)
        window = self.settings["smooth_window"]
        track = trajectory(boxes, empty, window)
        frames, alpha, placed = composite_track(bg, rgba, track, self.settings["scale_margin"])
        mask = alpha > 0.5
        n_missing = int((~mask.any(axis=(1, 2))).sum())
        if 2 * n_missing > n:
            raise SynthReject("product_too_small", frames_without_product=n_missing, n_frames=n)
        return SynthResult(frames=frames, mask=mask, fps=info.fps, meta={
            "bbox_smoothing": {"method": "centred_moving_average", "window": window,
                               "interpolated_frames": n_empty, "empty_frames": np.nonzero(empty)[0].tolist()},
            "scale_margin": self.settings["scale_margin"],
            "placed_bbox": placed,
            "reference_size": [int(rgba.shape[1]), int(rgba.shape[0])],
            "mask_area_frac": round(float(mask.mean()), 6),
        })


# ----------------------------------------------------------------------------- stage

def _check_pair(pair: Any) -> str | None:
    if not isinstance(pair, dict):
        return "malformed_pair"
    if any(not isinstance(pair.get(k), (str, int)) or pair.get(k) == "" for k in REQUIRED_PAIR_FIELDS):
        return "malformed_pair"
    pid = str(pair["id"])
    if "/" in pid or "\\" in pid or pid.startswith(".") or pid in ("synth.json", "rejects.jsonl"):
        return "unsafe_pair_id"
    return None


def run(work: str | Path, pairs_file: str | Path, out: str | Path, params: dict) -> dict:
    """Synthesise every pair of one shard file into ``out``; return synth.json's content."""
    work = Path(work)
    settings = validate_params(params)
    route = ROUTES[settings["route"]](settings)
    data = read_json(pairs_file)
    if not isinstance(data, dict) or not isinstance(data.get("pairs"), list):
        raise ValueError(f"{pairs_file}: not a pairs shard file (expected {{'shard', 'pairs': [...]}})")
    shard = data.get("shard")
    rejects = Rejects(STAGE)
    done: dict[str, dict] = {}
    pairs = sorted(data["pairs"], key=lambda p: str(p.get("id", "")) if isinstance(p, dict) else "")
    with atomic_path(out, directory=True) as tmp:
        seen: set[str] = set()
        for pair in pairs:
            bad = _check_pair(pair)
            item = str(pair.get("id", "?")) if isinstance(pair, dict) else "?"
            if bad:
                rejects.add(item, bad)
                continue
            if item in seen:
                rejects.add(item, "duplicate_pair")
                continue
            seen.add(item)
            t0 = time.perf_counter()
            try:
                res = route.synthesize(pair, work)
            except SynthReject as e:
                rejects.add(item, e.reason, **e.details)
                continue
            n, h, w = res.mask.shape
            pdir = tmp / item
            pdir.mkdir()
            try:
                write_video(pdir / "edited.mp4", res.frames, res.fps, crf=settings["crf"],
                            preset=settings["preset"], threads=settings["threads"])
            except (MediaError, ValueError) as e:
                shutil.rmtree(pdir)
                rejects.add(item, "encode_failed", error=str(e))
                continue
            save_masks(pdir / "mask.npy.gz", res.mask)
            meta = {**pair, **res.meta, "n_frames": int(n), "fps": round(float(res.fps), 6),
                    "width": int(w), "height": int(h), "route": route.name}
            write_json(pdir / "meta.json", meta)
            done[item] = {"status": "ok", "n_frames": int(n)}
            log.info("synth: %s ok (%d frames %dx%d) in %.2f s", item, n, w, h, time.perf_counter() - t0)
        summary = {"shard": shard, "route": route.name, "n_pairs": len(pairs), "n_ok": len(done),
                   "n_rejected": len(rejects), "rejected_by_reason": rejects.by_reason(), "pairs": done}
        write_json(tmp / "synth.json", summary)
        rejects.write(tmp / "rejects.jsonl")
    return summary


def main(argv: list[str] | None = None) -> None:
    cli.setup_logging()
    ap = cli.parser("Synth: composite the new product into the inpainted background along the old trajectory")
    ap.add_argument("--work", required=True, help="work directory the pair paths are relative to")
    ap.add_argument("--pairs", required=True, help="pairs shard file (work/pairs/shard-NNNN.json)")
    ap.add_argument("--out", required=True, help="output directory for this shard")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    summary = run(args.work, args.pairs, args.out, args.params)
    log.info("synth: shard %s: %d pairs, %d ok, %d rejected %s in %.1f s", summary["shard"], summary["n_pairs"],
             summary["n_ok"], summary["n_rejected"], summary["rejected_by_reason"], time.perf_counter() - t0)


from pvtt.data.backends import flux_wan_i2v as _flux_wan_i2v  # noqa: E402,F401  (registers route "flux_wan_i2v")

if __name__ == "__main__":   # via the package module: its ROUTES is the one the backends register in
    from pvtt.data.synth import main as _main
    _main()
