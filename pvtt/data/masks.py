"""Masks stage: one binary product mask per clip frame.

    python scripts/masks.py --params '{"masks": {...}}' --clips work/clips/B --raw work/raw/B \\
        --videos V1 V2 ... --out work/masks/B

writes, per video ``OUT/<video>/``: ``<clip_id>.npy.gz`` (``genbuild.io.masks.save_masks``, shape (n_frames, H, W)),
``masks.json`` and ``rejects.jsonl``.

Segmentation is a backend chosen by ``masks.backend``. The weight-free ``classical`` backend
detects the product on the first frame and propagates the mask with dense optical flow:

* colour model: the background is muted and its texture changes brightness, not hue, so
  each pixel is scored by its Mahalanobis distance to a robust Gaussian model of the
  background's chroma, in raw CIELAB (a*, b*) (places edges) and in lightness-normalised
  chroma (keeps dark saturated parts such as a cap or a handle);
* detection (frame 0): background model from the frame border (the product stays inside
  the frame), Otsu threshold, largest connected component; then the model is re-fitted on
  everything away from that candidate and the frame is cut at the midpoint between the
  background's and the product's typical score (the 50 % line of an anti-aliased edge),
  with the edge moved onto the full-resolution luma edges by a guided filter (decoded
  chroma is half resolution); holes are filled unless they look like background. No
  region that stands out by at least ``_MIN_CHROMA`` -> empty mask -> "no product detected";
* propagation: mask t-1 is warped to frame t with the Farneback flow t -> t-1
  (``genbuild.metrics.classical.flow``/``warp``) and frame t is re-segmented the same way inside a
  dilated band around the warped mask (background model and levels re-estimated on every
  frame), so the mask follows rotation, zoom and drift and cannot drift off the product.
  Where the re-segmentation disagrees grossly with the warped mask (IoU < 0.5), the
  warped mask is kept for that frame.

The real backend ``grounded_sam2`` (Grounding DINO on the first frame from a prompt naming
the product's category, then SAM2 video propagation; :mod:`pvtt.data.backends.grounded_sam2`)
registers itself in :data:`BACKENDS` when this module is imported. A clip's category comes
from ``clips.json`` (per clip or top level) or else from the video's ingest ``info.json``
(``raw``, by default the same place under ``raw/`` as the clips under ``clips/``); a backend whose prompt needs one
rejects a clip without a category ("no product category").
"""
from __future__ import annotations

import abc
import importlib
import logging
import re
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from genbuild import stage as cli
from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import read_json, write_json
from genbuild.io.masks import load_masks, save_masks
from genbuild.io.rejects import Rejects
from genbuild.io.video import MediaError, read_frames
from genbuild.metrics.classical import flow, warp
from genbuild.registry import Registry
from pvtt.data import vbatch
from pvtt.data.backends import BackendError

log = logging.getLogger("pvtt.data.masks")

STAGE = "masks"
DEFAULTS: dict[str, Any] = {
    "backend": "classical", "min_area_frac": 0.003,
    # grounded_sam2 (read by that backend only; see pvtt.data.backends.grounded_sam2)
    "grounding_dino": "models/grounding-dino-tiny", "sam2_config": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2_checkpoint": "models/sam2/sam2.1_hiera_tiny.pt", "sam2_overrides": [], "prompt": "a {category}.",
    "box_threshold": 0.35, "text_threshold": 0.25, "device": "cpu",
}
NO_PRODUCT = "no product detected"
NO_CATEGORY = "no product category"


# --------------------------------------------------------------------------- backends

class MaskBackend(abc.ABC):
    """Segments the one product of a clip: (N, H, W, 3) uint8 RGB -> (N, H, W) bool.

    An empty first-frame mask means "no product detected"; the stage rejects the clip.
    ``category`` is the product category of the clip's video (None when unknown); a backend
    that cannot work without one sets ``needs_category``.
    """

    name: str = ""
    needs_category: bool = False

    def __init__(self, cfg: dict):
        self.cfg = cfg

    @abc.abstractmethod
    def segment(self, frames: np.ndarray, category: str | None = None) -> np.ndarray:
        ...


BACKENDS = Registry("masks.backend")
register = BACKENDS.register


def get_backend(name: str, cfg: dict) -> MaskBackend:
    return BACKENDS.create(name, cfg)


# --------------------------------------------------------------------------- colour model

_RIDGE = 4.0        # added to the chroma covariance: a grey background with almost no chroma
                    # noise must not make every faint tint "far"
_MIN_SCORE = 5.0    # Mahalanobis distance to the background below which nothing is product
_MIN_CHROMA = 12.0  # a detected product must differ from the background by this much chroma
_L_FLOOR = 25.0     # CIELAB L* below which chroma is no longer divided by lightness
_STRONG = 0.8       # normalised-chroma level (0 background .. 1 product) that is product
                    # whatever the edge placement says (dark parts, thin handles)
_GF_RADIUS = 2      # guided filter (edge placement on luma): window radius, regularisation
_GF_EPS = 1e-3


def chroma_features(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two (H, W, 2) float32 chroma maps of an RGB uint8 frame.

    * raw CIELAB (a*, b*): its 50 % level between background and product lies close to
      the anti-aliased edge, which is what places the mask's boundary;
    * lightness-normalised (a*, b*) * 50 / max(L*, 25): a brightness-only texture (the
      background) or shading (the product) scales a* and b* roughly with L*, so the ratio
      stays put and a dark saturated part (a bottle cap, a bag's handle) keeps its distance
      from a muted background, where raw chroma would call it nearly grey. It decides
      membership, not edges: next to a dark background a blend is just a darker product.
    """
    lab = cv2.cvtColor(frame.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    raw = lab[..., 1:]
    return raw, raw * (50.0 / np.maximum(_block_mean(lab[..., 0])[..., None], _L_FLOOR))


def _block_mean(x: np.ndarray) -> np.ndarray:
    """Mean over the aligned 2x2 blocks of the yuv420p chroma grid, at full size.

    Decoded chroma is one value per 2x2 block, so a block straddling an edge gives a
    background pixel the product's chroma at the background's lightness; dividing by the
    block's mean lightness keeps that pixel a blend instead of a very saturated outlier.
    """
    h, w = x.shape
    p = np.pad(x, ((0, h % 2), (0, w % 2)), mode="edge")
    b = p.reshape(p.shape[0] // 2, 2, p.shape[1] // 2, 2).mean(axis=(1, 3))
    return np.repeat(np.repeat(b, 2, axis=0), 2, axis=1)[:h, :w]


class ChromaModel:
    """Gaussian model of the background's (a*, b*) chroma; score = Mahalanobis distance."""

    def __init__(self, samples: np.ndarray, keep: float = 0.9, max_samples: int = 4000):
        """Robust fit: median centre, covariance of the ``keep`` fraction nearest to it, so a
        product that happens to touch the sampled border does not inflate the model."""
        samples = samples.reshape(-1, 2).astype(np.float64)
        if len(samples) > max_samples:                      # deterministic thinning
            samples = samples[:: -(-len(samples) // max_samples)]
        self.mean = np.median(samples, axis=0)
        d = samples - self.mean
        r = np.hypot(d[:, 0], d[:, 1])
        for _ in range(2):
            core = d[r <= np.quantile(r, keep)] if len(d) > 10 else d
            cov = core.T @ core / max(len(core) - 1, 1) + _RIDGE * np.eye(2)
            self.icov = np.linalg.inv(cov)
            r = self._dist(d)

    def _dist(self, d: np.ndarray) -> np.ndarray:
        (a, b), (_, c) = self.icov
        x, y = d[..., 0], d[..., 1]
        return np.sqrt(np.maximum(a * x * x + 2 * b * x * y + c * y * y, 0.0))

    def score(self, ab: np.ndarray) -> np.ndarray:
        return self._dist(ab.astype(np.float64) - self.mean).astype(np.float32)


def _border(h: int, w: int, width: int) -> np.ndarray:
    b = np.zeros((h, w), bool)
    b[:width], b[-width:], b[:, :width], b[:, -width:] = True, True, True, True
    return b


def _disk(r: int) -> np.ndarray:
    r = max(int(r), 0)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _dilate(m: np.ndarray, r: int) -> np.ndarray:
    return cv2.dilate(m.astype(np.uint8), _disk(r)).astype(bool) if r > 0 else m.copy()


def _erode(m: np.ndarray, r: int) -> np.ndarray:
    return cv2.erode(m.astype(np.uint8), _disk(r), borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool) if r > 0 else m.copy()


def fill_holes(m: np.ndarray, score: np.ndarray | None = None, t: float = 0.0,
               max_bg_hole: float = 0.03) -> np.ndarray:
    """Fill the background regions enclosed by the mask.

    With ``score``, an enclosed region larger than ``max_bg_hole`` of the mask whose median
    score is below ``t / 2`` looks like background seen through the product (a bag's
    handle) and stays open; small holes (dark texture, glints) are always filled.
    """
    inv = (~m).astype(np.uint8)
    n, lab = cv2.connectedComponents(inv, connectivity=4)
    if n <= 2:
        return m.copy()
    edge = set(np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])).tolist())
    out = m.copy()
    area = m.sum()
    for k in range(1, n):
        if k in edge:
            continue
        hole = lab == k
        if score is not None and hole.sum() > max_bg_hole * area and np.median(score[hole]) < 0.5 * t:
            continue
        out |= hole
    return out


def largest_component(m: np.ndarray, prefer: np.ndarray | None = None, share: float = 0.3) -> np.ndarray:
    """The largest 8-connected component; with ``prefer``, every component lying at least
    ``share`` inside ``prefer`` (so a thin handle that a frame's threshold detaches from
    the body stays), or else the one overlapping ``prefer`` most."""
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(m, bool)
    if prefer is not None and prefer.any():
        overlap = np.bincount(lab[prefer], minlength=n)
        overlap[0] = 0
        if overlap.max() > 0:
            keep = overlap >= share * stats[:, cv2.CC_STAT_AREA]
            keep[0] = False
            keep[int(np.argmax(overlap))] = True
            return keep[lab]
    return lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def _midpoint(score: np.ndarray, fg: np.ndarray, bg: np.ndarray) -> tuple[float, float] | None:
    """Typical (median) score of the product and of the background next to it."""
    if fg.sum() < 4 or bg.sum() < 4:
        return None
    return float(np.median(score[fg])), float(np.median(score[bg]))


def luma(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s grey-guide guided filter: ``src`` smoothed, with the edges of ``guide``."""
    k = (2 * radius + 1, 2 * radius + 1)
    box = lambda x: cv2.boxFilter(x, cv2.CV_32F, k, borderType=cv2.BORDER_REFLECT)
    mi, ms = box(guide), box(src)
    var = box(guide * guide) - mi * mi
    cov = box(guide * src) - mi * ms
    a = cov / (var + eps)
    b = ms - a * mi
    return box(a) * guide + box(b)


class FrameScores:
    """Mahalanobis distances of a frame's pixels to a background chroma model, in both
    chroma spaces of :func:`chroma_features`; the model is fitted on ``bg`` pixels."""

    def __init__(self, feats: tuple[np.ndarray, np.ndarray], bg: np.ndarray):
        self.models = [ChromaModel(f[bg]) for f in feats]
        self.raw, self.norm = (m.score(f) for m, f in zip(self.models, feats))

    def levels(self, fg: np.ndarray, bg: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]] | None:
        a, b = _midpoint(self.raw, fg, bg), _midpoint(self.norm, fg, bg)
        return None if a is None or b is None else (a, b)


def _alpha(score: np.ndarray, levels: tuple[float, float]) -> np.ndarray:
    fg, bg = levels
    return np.clip((score - bg) / max(fg - bg, 1e-3), 0.0, 1.0).astype(np.float32)


def _segment(frame: np.ndarray, sc: FrameScores, levels, zone: np.ndarray | None = None,
             prefer: np.ndarray | None = None) -> np.ndarray:
    """Product mask: raw-chroma alpha with its edges moved onto the luma edges (guided
    filter) and cut at 50 %, united with the pixels that the lightness-normalised chroma
    calls product for sure; restricted to ``zone``, the component(s) of ``prefer`` (or the
    largest), closed, holes filled.

    The chroma planes of a yuv420p video are half resolution, so a chroma-only cut is off by
    up to a pixel on every edge; luma is full resolution and the guided filter moves the
    edge onto it wherever the product and background differ in brightness.
    """
    lv_raw, lv_norm = levels
    a = guided_filter(luma(frame), _alpha(sc.raw, lv_raw), _GF_RADIUS, _GF_EPS)
    m = ((a > 0.5) & (sc.raw > 0.5 * _MIN_SCORE)) | (_alpha(sc.norm, lv_norm) > _STRONG)
    if zone is not None:
        m &= zone
    m = largest_component(m, prefer)
    m = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_CLOSE, _disk(1)).astype(bool)
    return fill_holes(m, sc.norm, max(0.5 * sum(lv_norm), _MIN_SCORE))


def detect_product(frame: np.ndarray, min_area_frac: float = 0.003, max_area_frac: float = 0.6,
                   border: int | None = None) -> np.ndarray:
    """Saliency/colour detection of the one product on a frame; empty mask if none.

    Returns an (H, W) bool mask; empty when nothing stands out from the border's colours
    by at least ``_MIN_CHROMA`` or the region covers less than ``min_area_frac`` or more
    than ``max_area_frac`` of the frame.
    """
    h, w = frame.shape[:2]
    empty = np.zeros((h, w), bool)
    bw = border or max(2, round(0.05 * min(h, w)))
    feats = chroma_features(frame)
    score = ChromaModel(feats[1][_border(h, w, bw)]).score(feats[1])
    hi = float(np.percentile(score, 99.5))
    if hi <= _MIN_SCORE:
        return empty
    s8 = np.clip(score / hi * 255.0, 0, 255).astype(np.uint8)
    otsu, _ = cv2.threshold(s8, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    t = max(otsu / 255.0 * hi, _MIN_SCORE)
    m = largest_component(cv2.morphologyEx((score > t).astype(np.uint8), cv2.MORPH_OPEN, _disk(1)).astype(bool))
    if not m.any():
        return empty
    m = fill_holes(m)
    # second pass: background model from everything away from the candidate, 50 % cut
    far = ~_dilate(m, max(3, round(0.02 * max(h, w))))
    if far.sum() < 50:
        return empty
    sc = FrameScores(feats, far)
    levels = sc.levels(_erode(m, 1), far)
    if levels is not None:
        m = _segment(frame, sc, levels, prefer=m)
    area = m.mean()
    if not m.any() or area < min_area_frac or area > max_area_frac:
        return empty
    if np.linalg.norm(np.median(feats[1][m], axis=0) - sc.models[1].mean) < _MIN_CHROMA:
        return empty
    return m


def refine(frame: np.ndarray, prior: np.ndarray, band: int, fallback) -> tuple[np.ndarray, tuple]:
    """Re-segment ``frame`` near the warped mask ``prior``; returns (mask, levels used)."""
    feats = chroma_features(frame)
    far = ~_dilate(prior, band + 2)
    sc = FrameScores(feats, far if far.sum() > 50 else _border(*prior.shape, 2))
    zone = _dilate(prior, band)
    ring = zone & ~_dilate(prior, 2)
    levels = sc.levels(_erode(prior, 2), ring) or fallback
    return _segment(frame, sc, levels, zone=zone, prefer=prior), levels


@register("classical")
class ClassicalMaskBackend(MaskBackend):
    """First-frame colour/saliency detection + Farneback flow propagation (no weights)."""

    def segment(self, frames: np.ndarray, category: str | None = None) -> np.ndarray:
        n, h, w = frames.shape[:3]
        out = np.zeros((n, h, w), bool)
        m0 = detect_product(frames[0], self.cfg.get("min_area_frac", DEFAULTS["min_area_frac"]))
        if not m0.any():
            return out
        out[0] = m0
        levels = None
        for t in range(1, n):
            prev = out[t - 1]
            if not prev.any():
                break
            back = flow(frames[t], frames[t - 1])          # frame t pixel -> where it was in t-1
            pred = warp(prev, back)
            if not pred.any():
                pred = prev
            size = np.sqrt(pred.sum())
            band = int(np.clip(round(0.15 * size), 3, 12))
            m, cur = refine(frames[t], pred, band, levels or ((4 * _MIN_SCORE, 0.0),) * 2)
            inter = np.logical_and(m, pred).sum()
            union = np.logical_or(m, pred).sum()
            if union == 0 or inter / union < 0.5:
                log.debug("frame %d: refinement disagrees with the flow (IoU %.2f), keeping the warped mask", t,
                          inter / max(union, 1))
                m = pred
            else:
                levels = cur
            out[t] = m
        return out


# --------------------------------------------------------------------------- stage

def validate_params(params: dict) -> dict:
    """The ``masks`` section merged over :data:`DEFAULTS`; bad values raise ValueError naming the key."""
    sec = params.get("masks", {}) if isinstance(params, dict) else None
    if not isinstance(sec, dict):
        raise ValueError("params key 'masks' must be a mapping")
    unknown = sorted(set(sec) - set(DEFAULTS), key=str)   # YAML keys may be ints, None, dates
    if unknown:
        raise ValueError(f"params key 'masks.{unknown[0]}' is not known (known: {', '.join(sorted(DEFAULTS))})")
    cfg = {**DEFAULTS, **sec}
    BACKENDS.check(cfg["backend"])
    v = cfg["min_area_frac"]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        raise ValueError(f"params key 'masks.min_area_frac' must be a number in [0, 1), got {v!r}")
    cfg["min_area_frac"] = float(v)
    for key in ("grounding_dino", "sam2_config", "sam2_checkpoint"):
        if not isinstance(cfg[key], str) or not cfg[key]:
            raise ValueError(f"params key 'masks.{key}' must be a non-empty path string, got {cfg[key]!r}")
    ov = cfg["sam2_overrides"]
    if not isinstance(ov, list) or not all(isinstance(o, str) and o for o in ov):
        raise ValueError(f"params key 'masks.sam2_overrides' must be a list of hydra override strings, got {ov!r}")
    cfg["sam2_overrides"] = list(ov)
    pr = cfg["prompt"]
    try:
        ok = isinstance(pr, str) and bool(pr.format(category="product").strip())
    except (KeyError, IndexError, ValueError, AttributeError, TypeError):   # TypeError: '{category[a]}'
        ok = False
    if not ok:
        raise ValueError(f"params key 'masks.prompt' must be a non-empty text whose only field is {{category}}, got {pr!r}")
    for key in ("box_threshold", "text_threshold"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise ValueError(f"params key 'masks.{key}' must be a number in [0, 1], got {v!r}")
        cfg[key] = float(v)
    dev = cfg["device"]
    if not isinstance(dev, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", dev):
        raise ValueError(f"params key 'masks.device' must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {dev!r}")
    return cfg


def _beside(path: Path, stage: str, other: str) -> Path:
    """The same place under ``other/`` as ``path`` under ``stage/`` (work/clips/b0000/v -> work/raw/b0000/v)."""
    parts = path.absolute().parts
    i = len(parts) - 1 - parts[::-1].index(stage) if stage in parts else len(parts) - 2
    return Path(*parts[:i], other, *parts[i + 1:])


def clip_categories(index: dict, clips_dir: Path, raw: str | Path | None = None) -> dict[str, str | None]:
    """Product category of every clip: the clip's or clips.json's ``category``, else the
    video's ingest ``info.json`` (``raw``, by default ``raw/<batch>/<video>`` for ``clips/<batch>/<video>``)."""
    fallback = index.get("category")
    if not fallback:
        info_path = (_beside(clips_dir, "clips", "raw") if raw is None else Path(raw)) / "info.json"
        if raw is not None or info_path.is_file():             # an explicit --raw must hold info.json
            fallback = read_json(info_path).get("category")
    return {c["id"]: c.get("category") or fallback or None for c in index.get("clips") or []}


def mask_stats(masks: np.ndarray) -> tuple[list[float], list[list[int] | None]]:
    """Per-frame area fraction (6 decimals) and bbox [x0, y0, x1, y1] (x1, y1 exclusive) or None."""
    areas, boxes = [], []
    for m in masks:
        areas.append(round(float(m.mean()), 6))
        ys = np.flatnonzero(m.any(axis=1))
        xs = np.flatnonzero(m.any(axis=0))
        boxes.append(None if len(xs) == 0 else [int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1])
    return areas, boxes


def run(clips_dir: str | Path, out: str | Path, params: dict, raw: str | Path | None = None,
        backend: MaskBackend | None = None) -> dict:
    """Segment every clip listed in ``clips_dir/clips.json``; return what masks.json holds.

    ``backend``: one already made from params (a batch loads its model once). Raises ValueError
    (params) and BackendError (weights or packages of the backend missing).
    """
    cfg = validate_params(params)
    backend = backend or get_backend(cfg["backend"], cfg)
    clips_dir = Path(clips_dir)
    index = read_json(clips_dir / "clips.json")
    video = index.get("video") or clips_dir.name
    categories = clip_categories(index, clips_dir, raw) if backend.needs_category else {}
    rejects = Rejects(STAGE)
    result: dict = {"video": video, "clips": {}}
    clips = sorted(index.get("clips") or [], key=lambda c: c["id"])
    with atomic_path(out, directory=True) as tmp:
        for i, clip in enumerate(clips):
            cid = clip["id"]
            t0 = time.perf_counter()
            category = categories.get(cid)
            if backend.needs_category and not category:
                rejects.add(cid, NO_CATEGORY, backend=backend.name)
                continue
            try:
                frames = read_frames(clips_dir / clip["path"])
            except MediaError as e:
                rejects.add(cid, f"unreadable clip: {e}")
                continue
            masks = backend.segment(frames, category)
            if masks.shape != frames.shape[:3]:
                raise RuntimeError(f"backend {backend.name} returned masks {masks.shape} for frames {frames.shape}")
            if masks[0].mean() < cfg["min_area_frac"] or not masks[0].any():
                rejects.add(cid, NO_PRODUCT, backend=backend.name)
                continue
            save_masks(tmp / f"{cid}.npy.gz", masks)
            areas, boxes = mask_stats(masks)
            result["clips"][cid] = {"n_frames": int(len(masks)), "area_frac": areas, "bbox": boxes,
                                    "backend": backend.name, "path": f"{cid}.npy.gz"}
            log.info("%s %s (%d/%d): %d frames, mean area %.3f, %.2fs", video, cid, i + 1, len(clips),
                     len(masks), float(np.mean(areas)), time.perf_counter() - t0)
        write_json(tmp / "masks.json", result)
        rejects.write(tmp / "rejects.jsonl")
    log.info("%s: %d clips masked, %d rejected %s", video, len(result["clips"]), len(rejects), rejects.by_reason())
    return result


def main(argv: list[str] | None = None) -> None:
    cli.setup_logging()
    ap = cli.parser("Per-frame product masks for the clips of one batch of videos.")
    ap.add_argument("--clips", required=True, help="the batch's clips, work/clips/<batch> (<video>/clips.json + clips)")
    ap.add_argument("--raw", help="the ingested batch work/raw/<batch> (a video's info.json gives the product "
                                  "category when its clips.json has none; default: raw/ beside clips/)")
    ap.add_argument("--videos", nargs="+", help="ids of the batch's videos (without: one video: --clips/--raw/--out "
                                                "are that video's directories)")
    ap.add_argument("--out", required=True, help="the batch's directory, work/masks/<batch>")
    args = ap.parse_args(argv)
    clips = Path(args.clips)
    raw = Path(args.raw) if args.raw else _beside(clips, "clips", "raw")
    try:
        cfg = validate_params(args.params)
        backend = get_backend(cfg["backend"], cfg)  # once per batch: a real backend loads its weights once
        if args.videos is None:
            run(clips, args.out, args.params, raw=args.raw, backend=backend)
            return
        vbatch.run_videos(STAGE, args.out, args.videos,
                          lambda v, out: run(clips / v, out, args.params, raw=raw / v, backend=backend),
                          "masks.json", lambda v, reason: {"video": v, "status": "rejected", "reason": reason,
                                                           "clips": {}})
    except BackendError as e:
        log.error("%s", e)
        raise SystemExit(f"masks: {e}") from None


def load_clip_and_masks(clip_path: Path, mask_path: Path, cid: str, rejects: Rejects):
    """Decode a clip and its mask stack, or record why not (returns None): shared by QC and backgrounds."""
    try:
        frames = read_frames(clip_path)
    except MediaError as e:
        rejects.add(cid, f"unreadable clip: {e}")
        return None
    try:
        masks = load_masks(mask_path)
    except (OSError, ValueError, EOFError) as e:
        rejects.add(cid, f"unreadable masks: {mask_path.name}: {e.__class__.__name__}: {e}")
        return None
    if masks.ndim != 3 or masks.shape != frames.shape[:3]:
        rejects.add(cid, f"mask/clip mismatch: masks {tuple(masks.shape)} vs frames {tuple(frames.shape[:3])}")
        return None
    return frames, masks


# The real backend registers itself in BACKENDS (its heavy imports happen only when it is built).
importlib.import_module(".backends.grounded_sam2", __package__)
