"""Mask QC stage: keep the clips whose product masks are trustworthy.

    python scripts/maskqc.py --params '{"maskqc": {...}, "data": {...}}' --clips work/clips/B \\
        --masks work/masks/B --videos V1 V2 ... --out work/maskqc/B

writes ``OUT/<video>/qc.json`` and ``OUT/<video>/rejects.jsonl``. Checks per clip (all weight-free):

* temporal IoU: IoU of mask t+1 with mask t carried to t+1 by the frame's dense flow
  (motion-compensated, so camera and product motion do not count); mean must reach
  ``min_temporal_iou``; the minimum is reported;
* empty frames: fraction of frames whose mask covers less than ``min_area_frac`` of the
  frame (missed detections) must not exceed ``max_empty_frac``;
* edge check: the largest per-frame fraction of the mask's boundary lying on the frame
  border (a product cut by the frame, or background taken for the product) must not
  exceed ``max_border_frac``;
* area jumps: the largest relative area change between consecutive frames
  ``|a(t+1) - a(t)| / max(a(t), a(t+1))`` (sudden misses or false detections) must not
  exceed ``max_area_jump``;
* edge quality: the median over frames of the image gradient on the mask's boundary over the
  gradient just beside it (``edge_contrast``, :func:`edge_contrast`) must reach
  ``min_edge_contrast`` (a shifted, bloated or eroded mask does not follow the silhouette);
* false detections: the fraction of frames whose mask holds a second object of at least
  ``BLOB_MIN_SHARE`` of the largest one (``extra_blob_frac``) must not exceed
  ``max_extra_blob_frac``.

Only clips present in ``masks.json`` are checked; clips rejected upstream are absent.
"""
from __future__ import annotations

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
from genbuild.metrics.classical import flow, iou, warp
from pvtt.data import vbatch
from pvtt.data.masks import load_clip_and_masks

log = logging.getLogger("pvtt.data.maskqc")

STAGE = "maskqc"
DEFAULTS: dict[str, Any] = {
    "min_temporal_iou": 0.9,
    "min_area_frac": 0.003,
    "max_empty_frac": 0.05,
    "max_border_frac": 0.5,
    "max_area_jump": 0.5,
    "min_edge_contrast": 1.2,
    "max_extra_blob_frac": 0.1,
}
EDGE_BAND = (3.0, 6.0)    # px from the mask boundary: where a misplaced mask's real edge lies
BLOB_MIN_SHARE = 0.2      # a second component this large (vs the largest) is a second detection


def validate_params(params: dict) -> dict:
    """The ``maskqc`` section merged over :data:`DEFAULTS`; bad values raise ValueError naming the key."""
    sec = params.get("maskqc", {}) if isinstance(params, dict) else None
    if not isinstance(sec, dict):
        raise ValueError("params key 'maskqc' must be a mapping")
    unknown = sorted(set(sec) - set(DEFAULTS), key=str)   # YAML keys may be ints, None, dates
    if unknown:
        raise ValueError(f"params key 'maskqc.{unknown[0]}' is not known (known: {', '.join(sorted(DEFAULTS))})")
    cfg = {**DEFAULTS, **sec}
    for key, v in cfg.items():
        hi = 100.0 if key == "min_edge_contrast" else 1.0     # a ratio of gradients; the rest are fractions
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= hi:
            raise ValueError(f"params key 'maskqc.{key}' must be a number in [0, {hi:g}], got {v!r}")
        cfg[key] = float(v)
    return cfg


def temporal_ious(frames: np.ndarray, masks: np.ndarray) -> list[float]:
    """IoU(mask[t+1], mask[t] warped to t+1 by the Farneback flow t+1 -> t), t = 0..N-2."""
    out = []
    for t in range(len(masks) - 1):
        if not masks[t].any() and not masks[t + 1].any():
            out.append(1.0)
            continue
        back = flow(frames[t + 1], frames[t])
        out.append(iou(warp(masks[t], back), masks[t + 1]))
    return out


def _boundary(mask: np.ndarray) -> np.ndarray:
    """The mask's inner boundary pixels (outside the frame counts as background)."""
    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return mask & ~inner.astype(bool)


def border_fraction(mask: np.ndarray) -> float:
    """Fraction of the mask's boundary pixels that lie on the outermost ring of the frame."""
    if not mask.any():
        return 0.0
    boundary = _boundary(mask)
    ring = np.zeros_like(mask)
    ring[0], ring[-1], ring[:, 0], ring[:, -1] = True, True, True, True
    return float((boundary & ring).sum() / max(boundary.sum(), 1))


def edge_contrast(frame: np.ndarray, mask: np.ndarray) -> float | None:
    """How much stronger the image edges are on the mask's boundary than just beside it.

    Mean luma gradient on the boundary (the strongest within 1 px, the frame border left
    out) over the mean gradient in the band ``EDGE_BAND`` px away on both sides. A mask that
    follows the product's silhouette sits on the strongest nearby edge (ratio well above 1,
    whatever the background texture); one that is shifted, bloated or eroded has the real
    edge in the band instead (ratio near or below 1). None for an empty mask.
    """
    b = _boundary(mask)
    b[0], b[-1], b[:, 0], b[:, -1] = False, False, False, False
    if not b.any():
        return None
    y = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
    g = cv2.magnitude(cv2.Sobel(y, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(y, cv2.CV_32F, 0, 1, ksize=3))
    on = cv2.dilate(g, np.ones((3, 3), np.uint8))[b].mean()
    lo, hi = EDGE_BAND
    dist = cv2.distanceTransform((~b).astype(np.uint8), cv2.DIST_L2, 3)
    band = (dist >= lo) & (dist <= hi)
    near = g[band].mean() if band.any() else 0.0
    return float(on / max(near, 1.0))


def extra_blobs(mask: np.ndarray) -> bool:
    """True when the mask holds a second component of at least ``BLOB_MIN_SHARE`` of the largest:
    a false detection beside the product (one product per clip)."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return False
    areas = np.sort(stats[1:, cv2.CC_STAT_AREA])[::-1]
    return bool(areas[1] >= BLOB_MIN_SHARE * areas[0])


def area_jumps(areas: np.ndarray) -> np.ndarray:
    """Relative area change between consecutive frames, 0 where both are empty."""
    a0, a1 = areas[:-1], areas[1:]
    top = np.maximum(a0, a1)
    return np.where(top > 0, np.abs(a1 - a0) / np.where(top > 0, top, 1), 0.0)


def clip_qc(frames: np.ndarray, masks: np.ndarray, cfg: dict) -> dict:
    """Metrics and verdict of one clip's masks (cfg: a validated ``maskqc`` section)."""
    if masks.shape != frames.shape[:3]:
        raise ValueError(f"masks {masks.shape} do not match frames {frames.shape[:3]}")
    areas = masks.reshape(len(masks), -1).mean(axis=1)
    tiou = temporal_ious(frames, masks) or [1.0]
    empty = float(np.mean(areas < max(cfg["min_area_frac"], 1e-12)))
    border = max(border_fraction(m) for m in masks)
    jump = float(area_jumps(areas).max()) if len(areas) > 1 else 0.0
    edges = [e for e in (edge_contrast(f, m) for f, m in zip(frames, masks)) if e is not None]
    blobs = float(np.mean([extra_blobs(m) for m in masks]))
    res = {"temporal_iou_mean": round(float(np.mean(tiou)), 4), "temporal_iou_min": round(float(np.min(tiou)), 4),
           "empty_frac": round(empty, 4), "border_frac": round(border, 4), "area_jump_max": round(jump, 4),
           "edge_contrast": round(float(np.median(edges)) if edges else 0.0, 4), "extra_blob_frac": round(blobs, 4)}
    reasons = []
    if res["temporal_iou_mean"] < cfg["min_temporal_iou"]:
        reasons.append(f"low temporal IoU: mean {res['temporal_iou_mean']:.3f} < {cfg['min_temporal_iou']}")
    if res["empty_frac"] > cfg["max_empty_frac"]:
        reasons.append(f"empty masks: {res['empty_frac']:.3f} of frames below area {cfg['min_area_frac']} > {cfg['max_empty_frac']}")
    if res["border_frac"] > cfg["max_border_frac"]:
        reasons.append(f"mask on frame border: {res['border_frac']:.3f} of its boundary > {cfg['max_border_frac']}")
    if res["area_jump_max"] > cfg["max_area_jump"]:
        reasons.append(f"sudden area jump: {res['area_jump_max']:.3f} > {cfg['max_area_jump']}")
    if res["edge_contrast"] < cfg["min_edge_contrast"]:
        reasons.append(f"poor mask edges: edge contrast {res['edge_contrast']:.3f} < {cfg['min_edge_contrast']}")
    if res["extra_blob_frac"] > cfg["max_extra_blob_frac"]:
        reasons.append(f"false detections: {res['extra_blob_frac']:.3f} of frames with a second object > {cfg['max_extra_blob_frac']}")
    return {**res, "kept": not reasons, "reasons": reasons}


def run(clips_dir: str | Path, masks_dir: str | Path, out: str | Path, params: dict) -> dict:
    """QC every clip of ``masks_dir/masks.json``; return what qc.json holds."""
    cfg = validate_params(params)
    clips_dir, masks_dir = Path(clips_dir), Path(masks_dir)
    index = read_json(masks_dir / "masks.json")
    clips_index = read_json(clips_dir / "clips.json")
    clip_paths = {c["id"]: c["path"] for c in clips_index.get("clips") or []}
    video = index.get("video") or clips_index.get("video") or masks_dir.name
    rejects = Rejects(STAGE)
    result: dict = {"video": video, "clips": {}}
    ids = sorted(index.get("clips") or {})
    for i, cid in enumerate(ids):
        t0 = time.perf_counter()
        if cid not in clip_paths:
            rejects.add(cid, "clip missing: not listed in clips.json")
            continue
        loaded = load_clip_and_masks(clips_dir / clip_paths[cid],
                                     masks_dir / index["clips"][cid].get("path", f"{cid}.npy.gz"), cid, rejects)
        if loaded is None:
            continue
        frames, masks = loaded
        res = clip_qc(frames, masks, cfg)
        result["clips"][cid] = res
        if not res["kept"]:
            rejects.add(cid, "; ".join(res["reasons"]), checks=res["reasons"],
                        **{k: v for k, v in res.items() if k not in ("kept", "reasons")})
        log.info("%s %s (%d/%d): %s, temporal IoU mean %.3f min %.3f, empty %.3f, border %.3f, jump %.3f, "
                 "edge contrast %.3f, extra blobs %.3f, %.2fs", video, cid, i + 1, len(ids), "kept" if res["kept"] else "dropped",
                 res["temporal_iou_mean"], res["temporal_iou_min"], res["empty_frac"], res["border_frac"],
                 res["area_jump_max"], res["edge_contrast"], res["extra_blob_frac"], time.perf_counter() - t0)
    with atomic_path(out, directory=True) as tmp:
        write_json(tmp / "qc.json", result)
        rejects.write(tmp / "rejects.jsonl")
    kept = sum(c["kept"] for c in result["clips"].values())
    log.info("%s: %d of %d clips kept, %d rejected %s", video, kept, len(ids), len(rejects), rejects.by_reason())
    return result


def main(argv: list[str] | None = None) -> None:
    cli.setup_logging()
    ap = cli.parser("Quality checks of the product masks of one batch of videos; decides which clips are kept.")
    ap.add_argument("--clips", required=True, help="the batch's clips, work/clips/<batch>")
    ap.add_argument("--masks", required=True, help="the batch's masks, work/masks/<batch>")
    ap.add_argument("--videos", nargs="+", help="ids of the batch's videos (without: one video, the paths are its own)")
    ap.add_argument("--out", required=True, help="the batch's directory, work/maskqc/<batch>")
    args = ap.parse_args(argv)
    validate_params(args.params)
    if args.videos is None:
        run(args.clips, args.masks, args.out, args.params)
        return
    clips, masks = Path(args.clips), Path(args.masks)
    vbatch.run_videos(STAGE, args.out, args.videos, lambda v, out: run(clips / v, masks / v, out, args.params),
                      "qc.json", lambda v, reason: {"video": v, "status": "rejected", "reason": reason, "clips": {}})
