"""Filter L2, learned scores: CLIP-I, DINO-I, MUSIQ and CLIP temporal consistency of an edited video.

Configured under ``filter.l2.learned`` (absent, null or empty: off). Every entry that is set is a
*gate*: its weights must be on disk, or the stage stops with an error naming the path, the params
key and ``dvc pull <path>`` (unlike ``eval.metrics``, where a missing metric is reported as "not
measured"). The networks and their loaders are the ones of :mod:`genbuild.metrics.learned`
(:func:`genbuild.metrics.learned.load_metric`); paths are relative to the stage's working directory (the repo
root in the build)::

    learned:
      device: auto            # auto (cuda when available, else cpu) | cpu | cuda | cuda:N
      clip_i: {weights: <open_clip checkpoint>, model: ViT-H-14, min: 0.25, frames: 8}
      dino_i: {weights: <Dinov2Model dir>, min: 0.3, frames: 8}
      musiq: {weights: <pyiqa MUSIQ state dict>, min: 40, frames: 4}
      clip_temporal: {min: 0.9}        # CLIP of clip_i, or its own {weights, model | model_config}

Scores (all higher-is-better, pass when ``>= min``), stored in ``scores.json`` under ``l2``:

* ``clip_i`` / ``dino_i``: mean cosine similarity between the embedding of the reference image and
  the embeddings of the *product crops* of the edited video: per frame whose new product mask is
  non-empty, the mask's bounding box (padded by ``CROP_PAD`` px), pixels outside the mask (dilated
  by 1 px) set to white, padded to a white square and resized to ``CROP_SIZE``. The reference (the
  RGBA cut-out of the products stage) is composited onto white and squared the same way, so both
  sides are "the product on white" and the metric's centre crop cuts nothing off. Undefined (a
  reject reason) when the mask is empty in every frame.
* ``musiq``: mean MUSIQ score of the edited frames (whole frames; the scale is the checkpoint's,
  e.g. 0-100 for KonIQ).
* ``clip_temporal``: mean cosine similarity of the CLIP image embeddings of consecutive edited
  frames (t, t+1), whole frames, every frame; 1.0 = no change between frames.

``frames`` (optional, clip_i/dino_i/musiq): score at most that many frames, evenly spaced (for
clip_i/dino_i among the frames where the product is visible); default all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from genbuild import stage as cli
from genbuild.weights import MissingWeightsError

KEY = "filter.l2.learned"
SCORES = ("clip_i", "dino_i", "musiq", "clip_temporal")
SUBSAMPLED = ("clip_i", "dino_i", "musiq")
CROP_SIZE = 256          # product crops and the reference are squared and resized to this
CROP_PAD = 4             # px around the new product's bounding box


def resolve_device(device: str | None) -> str:
    """``auto``/None -> ``cuda`` when torch sees a GPU, else ``cpu``; anything else as given."""
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def _bad(key: str, what: str, got: Any) -> ValueError:
    return ValueError(f"params key '{key}' must be {what}, got {got!r}")


def read_config(params: dict) -> dict | None:
    """Validated ``filter.l2.learned``: {"device", "scores": {name: {"entry", "min", "frames"}}}; None when off.

    A bad value raises ValueError naming its key; nothing is loaded here.
    """
    cfg = cli.get(params, KEY, None)
    if not cfg:
        return None
    if not isinstance(cfg, dict):
        raise _bad(KEY, "a mapping or null", cfg)
    unknown = sorted(set(cfg) - set(SCORES) - {"device"})
    if unknown:
        raise ValueError(f"params key '{KEY}': unknown entries {unknown}; known: {sorted(SCORES)} and 'device'")
    device = cfg.get("device", "auto")
    if not isinstance(device, str) or not device:
        raise _bad(f"{KEY}.device", "auto, cpu, cuda or cuda:N", device)
    scores: dict[str, dict] = {}
    for name in SCORES:
        entry = cfg.get(name)
        if not entry:
            continue
        key = f"{KEY}.{name}"
        if not isinstance(entry, dict):
            raise _bad(key, "a mapping or null", entry)
        lo = entry.get("min")
        if isinstance(lo, bool) or not isinstance(lo, (int, float)) or not math.isfinite(lo):
            raise _bad(f"{key}.min", "a finite number (the threshold)", lo)
        frames = entry.get("frames")
        if frames is not None and (name not in SUBSAMPLED or isinstance(frames, bool)
                                   or not isinstance(frames, int) or frames < 1):
            raise _bad(f"{key}.frames", "an integer >= 1 or absent" if name in SUBSAMPLED else "absent", frames)
        net = {k: v for k, v in entry.items() if k not in ("min", "frames")}
        if name == "clip_temporal" and not net.get("weights"):
            clip = cfg.get("clip_i") or {}
            if not isinstance(clip, dict) or not clip.get("weights"):
                raise ValueError(f"params key '{key}' has no 'weights' and '{KEY}.clip_i' is not set: "
                                 f"give it its own CLIP weights or enable clip_i")
            net = {k: v for k, v in clip.items() if k not in ("min", "frames")}
            key = f"{KEY}.clip_i"          # the weights it loads are configured there
        if not isinstance(net.get("weights"), str) or not net["weights"]:
            raise _bad(f"{key}.weights", "a weights path", net.get("weights"))
        scores[name] = {"entry": net, "min": float(lo), "frames": frames, "weights_key": f"{key}.weights"}
    return {"device": device, "scores": scores} if scores else None


def _missing(name: str, spec: dict, exc: Exception) -> MissingWeightsError:
    w = spec["entry"]["weights"]
    return MissingWeightsError(
        f"filter L2 score '{name}' is enabled but its weights are missing: {exc} "
        f"(params key '{spec['weights_key']}' = {w!r}). Fetch them with `dvc pull {w}`, or set "
        f"'{KEY}.{name}' to null to turn the score off; the filter never skips a configured score.")


# --------------------------------------------------------------------------------------- crops

def _square_white(rgb: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    h, w = rgb.shape[:2]
    side = max(h, w)
    out = np.full((side, side, 3), 255, np.uint8)
    y0, x0 = (side - h) // 2, (side - w) // 2
    out[y0:y0 + h, x0:x0 + w] = rgb
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(out, (size, size), interpolation=interp)


def reference_on_white(rgba: np.ndarray) -> np.ndarray:
    """RGBA/RGB uint8 reference -> RGB on white, squared to ``CROP_SIZE``."""
    if rgba.shape[-1] == 4:
        a = rgba[..., 3:4].astype(np.float32) / 255.0
        rgb = np.rint(rgba[..., :3] * a + 255.0 * (1.0 - a)).astype(np.uint8)
    else:
        rgb = rgba
    return _square_white(rgb)


def product_crops(frames: np.ndarray, masks: np.ndarray, pad: int = CROP_PAD) -> tuple[np.ndarray, list[int]]:
    """(crops (K, CROP_SIZE, CROP_SIZE, 3), their frame indices) for the frames whose mask is non-empty."""
    k = np.ones((3, 3), np.uint8)
    crops, idx = [], []
    for t, (frame, mask) in enumerate(zip(frames, masks)):
        ys, xs = np.nonzero(mask)
        if len(ys) == 0:
            continue
        h, w = mask.shape
        y0, y1 = max(0, ys.min() - pad), min(h, ys.max() + 1 + pad)
        x0, x1 = max(0, xs.min() - pad), min(w, xs.max() + 1 + pad)
        keep = cv2.dilate(mask.astype(np.uint8), k)[y0:y1, x0:x1].astype(bool)
        crop = np.where(keep[..., None], frame[y0:y1, x0:x1], 255).astype(np.uint8)
        crops.append(_square_white(crop))
        idx.append(t)
    if not crops:
        return np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8), []
    return np.stack(crops), idx


def even_indices(n: int, k: int | None) -> list[int]:
    """``k`` evenly spaced indices of ``range(n)`` including both ends (all of them when k is None or >= n)."""
    if k is None or k >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)})


def _r(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


# --------------------------------------------------------------------------------------- scorer

@dataclass
class LearnedScorer:
    """Loaded networks (genbuild.metrics.learned metrics) and thresholds; ``score`` adds to one pair's L2."""

    metrics: dict[str, Any]                  # score name -> quality.ClipI / DinoI / Musiq
    mins: dict[str, float]
    frames: dict[str, int | None] = field(default_factory=dict)
    implementation: dict[str, str] = field(default_factory=dict)

    @property
    def needs_reference(self) -> bool:
        return "clip_i" in self.metrics or "dino_i" in self.metrics

    def values(self, edited: np.ndarray, new_masks: np.ndarray, reference: np.ndarray | None) -> dict[str, float]:
        """Raw scores (NaN where undefined) of one edited video; ``reference`` is the product on white
        as :func:`reference_on_white` returns it (needed when clip_i or dino_i is on)."""
        out: dict[str, float] = {}
        crops = idx = None
        for name in SCORES:
            m = self.metrics.get(name)
            if m is None:
                continue
            if name in ("clip_i", "dino_i"):
                if crops is None:
                    crops, idx = product_crops(edited, new_masks)
                if not len(crops):
                    out[name] = float("nan")
                    continue
                sel = crops[even_indices(len(crops), self.frames.get(name))]
                out[name] = float(m.score(sel, None, reference, None))
            elif name == "musiq":
                sel = edited[even_indices(len(edited), self.frames.get(name))]
                out[name] = float(m.score(np.ascontiguousarray(sel), None, None, None))
            else:  # clip_temporal
                if len(edited) < 2:
                    out[name] = float("nan")
                    continue
                e = m.embed(edited)
                out[name] = float((e[1:] * e[:-1]).sum(-1).mean())
        return out

    def score(self, edited: np.ndarray, new_masks: np.ndarray, reference: np.ndarray | None
              ) -> tuple[dict[str, float | None], list[str]]:
        """(rounded scores for scores.json, reject reasons like ``"l2: clip_i 0.2100 < 0.25"``)."""
        vals = self.values(edited, new_masks, reference)
        reasons = []
        for name, v in vals.items():
            lo = self.mins[name]
            if not math.isfinite(v):
                why = ("new product mask empty in every frame" if name in ("clip_i", "dino_i")
                       else "fewer than 2 frames" if name == "clip_temporal" else "not finite")
                reasons.append(f"l2: {name} undefined ({why})")
            elif v < lo:
                reasons.append(f"l2: {name} {v:.4f} < {lo:g}")
        return {k: _r(v) for k, v in vals.items()}, reasons


def load(params: dict, root: str | Path = ".") -> LearnedScorer | None:
    """The configured learned L2 scores, loaded; None when ``filter.l2.learned`` is off.

    Raises ValueError (bad params, naming the key) and MissingWeightsError (enabled score whose
    weights are not on disk: path, params key and ``dvc pull``). Identical network entries (e.g.
    clip_temporal reusing clip_i's CLIP) are loaded once.
    """
    from genbuild.metrics import learned as quality

    cfg = read_config(params)
    if cfg is None:
        return None
    device = resolve_device(cfg["device"])
    loaded: dict[str, Any] = {}
    metrics, impl = {}, {}
    for name, spec in cfg["scores"].items():
        kind = "clip_i" if name == "clip_temporal" else name
        cache_key = (kind, repr(sorted(spec["entry"].items())))
        if cache_key not in loaded:
            try:
                loaded[cache_key] = quality.load_metric(kind, spec["entry"], Path(root), device)
            except quality.Unavailable as exc:
                raise _missing(name, spec, exc) from None
        metrics[name] = loaded[cache_key]
        impl[name] = metrics[name].implementation
    return LearnedScorer(metrics, {n: s["min"] for n, s in cfg["scores"].items()},
                         {n: s["frames"] for n, s in cfg["scores"].items()}, impl)
