"""Frames for people to look at: uint8 conversion, cut-outs on white, labelled side-by-side
tiles and GIF animations (PIL, no timestamps: equal frames give equal bytes).

Shared by the evaluation report, the teacher's in-training evaluation and ``generate``; kept
apart from the HTML page (``pvtt.eval.report``) so that a change to the page does not make the
training rules, which list this file as code they run, retrain.
"""
from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, ImageDraw

from genbuild.io.atomic import write_bytes


def _label(img: np.ndarray, text: str) -> np.ndarray:
    im = Image.fromarray(img)
    d = ImageDraw.Draw(im)
    d.rectangle([0, 0, min(im.width, 6 * len(text) + 4), 11], fill=(0, 0, 0))
    d.text((2, 0), text, fill=(255, 255, 255))
    return np.asarray(im)


def to_uint8(frames) -> np.ndarray:
    """A (3, F, H, W) torch video in [-1, 1] -> (F, H, W, 3) uint8 frames."""
    x = ((frames.clamp(-1, 1) + 1) * 127.5).round().byte()
    return x.permute(1, 2, 3, 0).numpy()


def on_white(rgba: np.ndarray) -> np.ndarray:
    """An RGBA cut-out composited on white, for display."""
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    return (rgba[..., :3] * a + 255 * (1 - a)).astype(np.uint8)


def side_by_side(columns: list[tuple[str, np.ndarray]], scale: int = 2) -> list[np.ndarray]:
    """columns: (label, (F, H, W, 3) uint8 video or (H, W, 3) still) -> list of tiled frames."""
    n = max(len(v) if v.ndim == 4 else 1 for _, v in columns)
    h, w = next(v.shape[-3:-1] for _, v in columns if v.ndim == 4)
    tiles = []
    for t in range(n):
        row = []
        for label, v in columns:
            f = v[min(t, len(v) - 1)] if v.ndim == 4 else v
            if f.shape[:2] != (h, w):
                f = np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR))
            f = np.repeat(np.repeat(f, scale, 0), scale, 1)
            row.append(_label(f, label))
        tiles.append(np.concatenate(row, axis=1))
    return tiles


def gif_bytes(frames: list[np.ndarray], fps: float = 8.0) -> bytes:
    """An animated GIF of uint8 RGB frames (no timestamps: equal frames give equal bytes)."""
    ims = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=int(1000 / fps), loop=0, optimize=False)
    return buf.getvalue()


def write_gif(path: str | os.PathLike, frames: list[np.ndarray], fps: float = 8.0) -> None:
    write_bytes(path, gif_bytes(frames, fps))
