"""Weight-free video metrics shared by the filters and the evaluation.

All functions take uint8 RGB frames shaped (N, H, W, 3) (or a single (H, W, 3) frame) and
masks shaped (N, H, W) bool, and return plain floats so that results serialise to JSON.
"""
from __future__ import annotations

import cv2
import numpy as np


def _f(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB over all pixels, or only where ``mask`` is True (broadcast over channels).

    Identical inputs give +inf, reported as 100.0 so JSON stays finite.
    """
    d = (_f(a) - _f(b)) ** 2
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != d.shape[: m.ndim]:
            raise ValueError(f"mask shape {m.shape} does not match frames {d.shape}")
        if not m.any():
            return float("nan")
        mse = d[m].mean()
    else:
        mse = d.mean()
    if mse <= 1e-12:
        return 100.0
    return float(10.0 * np.log10(255.0 ** 2 / mse))


def _ssim_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SSIM map of two grayscale float frames (Gaussian window 11, sigma 1.5, as Wang et al.)."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda z: cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.asarray(frame, dtype=np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float64)


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean SSIM over frames (luma), optionally averaged only where ``mask`` is True."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim == 3:
        a, b = a[None], b[None]
        mask = None if mask is None else np.asarray(mask)[None]
    vals = []
    for i in range(len(a)):
        m = _ssim_map(_gray(a[i]), _gray(b[i]))
        if mask is not None:
            mi = np.asarray(mask[i], dtype=bool)
            if not mi.any():
                continue
            vals.append(m[mi].mean())
        else:
            vals.append(m.mean())
    return float(np.mean(vals)) if vals else float("nan")


def flow(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """Dense Farneback optical flow from ``prev`` to ``nxt`` (both RGB uint8), (H, W, 2)."""
    return cv2.calcOpticalFlowFarneback(
        cv2.cvtColor(prev, cv2.COLOR_RGB2GRAY), cv2.cvtColor(nxt, cv2.COLOR_RGB2GRAY),
        None, 0.5, 3, 15, 3, 5, 1.2, 0)


def warp(image: np.ndarray, flow_to_image: np.ndarray) -> np.ndarray:
    """Backward-warp ``image`` with a flow field that maps output pixels into ``image``."""
    h, w = flow_to_image.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx = gx + flow_to_image[..., 0].astype(np.float32)
    my = gy + flow_to_image[..., 1].astype(np.float32)
    interp = cv2.INTER_NEAREST if image.dtype == bool or image.dtype == np.uint8 and image.ndim == 2 else cv2.INTER_LINEAR
    src = image.astype(np.uint8) if image.dtype == bool else image
    out = cv2.remap(src, mx, my, interp, borderMode=cv2.BORDER_REPLICATE)
    return out.astype(bool) if image.dtype == bool else out


def warp_error(frames: np.ndarray) -> float:
    """Temporal inconsistency: mean |frame_t - warp(frame_{t+1} -> t)| / 255 over consecutive pairs.

    Flow is estimated from frame t to t+1; a temporally coherent video whose changes are
    explained by motion scores near 0; flicker and popping raise it.
    """
    frames = np.asarray(frames)
    if len(frames) < 2:
        return 0.0
    errs = []
    for t in range(len(frames) - 1):
        fl = flow(frames[t], frames[t + 1])
        back = warp(frames[t + 1], fl)
        errs.append(np.abs(_f(frames[t]) - _f(back)).mean() / 255.0)
    return float(np.mean(errs))


def temporal_consistency(frames: np.ndarray) -> float:
    """1 - warp error: 1.0 for a perfectly motion-consistent video."""
    return 1.0 - warp_error(frames)


def sharpness(frames: np.ndarray) -> float:
    """Mean variance of the Laplacian of luma (higher is sharper)."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    return float(np.mean([cv2.Laplacian(_gray(f), cv2.CV_64F).var() for f in frames]))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (any shape); two empty masks give 1.0."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(a, b).sum() / union)


def mean_frame_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over frames of per-frame IoU of two (N, H, W) mask stacks."""
    return float(np.mean([iou(x, y) for x, y in zip(a, b)]))
