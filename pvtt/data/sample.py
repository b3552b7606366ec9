"""Embedded sample: procedural product-showcase videos and a product catalogue.

Why procedural: the build must run end to end (CI, laptops, reviewers) with no network and
no licensed footage, and its weight-free stages need inputs whose right answers are known.
Every video therefore comes with ground truth: the frame index of each hard cut and the
exact product mask of every frame.

How it is made, and why that way:

* Each product is drawn once as a supersampled RGBA sprite (premultiplied colour + alpha).
  The catalogue images and every video frame use that same sprite, so a product image
  matches the product in the videos, and the warped alpha *is* the ground-truth mask.
* Products are saturated colours; backgrounds are muted (low-saturation) textures whose
  texture modulates brightness only, so hue and saturation stay flat. The weight-free mask
  detector keys on "saturated object on a muted background", and PySceneDetect's
  ContentDetector (mean HSV change) sees little change under camera motion.
* A hard cut changes the background's brightness level, hue family and pattern all at once,
  and moves the product, so the HSV change at a cut is far above ContentDetector's
  threshold while motion within a shot (pan, slow zoom, product drift) stays far below it.
* All randomness comes from ``numpy.random.Generator`` seeded by (seed, purpose, index), so
  a video's content depends only on the seed and its own index, and reruns give the same
  bytes (ffmpeg encodes bit-exactly; see genbuild.io.video).
"""
from __future__ import annotations

import colorsys
import functools
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from genbuild import stage as cli
from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import write_json
from genbuild.io.masks import save_masks
from genbuild.io.video import write_png, write_video

log = logging.getLogger("pvtt.data.sample")

CATEGORIES = ("watch", "bottle", "bag", "box")
MATERIALS = {
    "watch": ("steel", "sport"),
    "bottle": ("glass", "plastic"),
    "bag": ("leather", "canvas"),
    "box": ("gift", "cardboard"),
}
# Saturated, well-separated hues; each product gets its own while there are enough.
PALETTE = (
    ("red", (214, 32, 36)),
    ("orange", (240, 122, 16)),
    ("yellow", (236, 196, 14)),
    ("green", (36, 168, 58)),
    ("teal", (0, 160, 156)),
    ("blue", (34, 82, 214)),
    ("purple", (132, 48, 204)),
    ("magenta", (214, 38, 148)),
)
# Muted backdrop hue families (hue in degrees) and brightness levels (HSV V, 0-255).
# Neighbouring shots always differ in all three, which is what makes a cut a cut.
BG_FAMILIES = (("sand", 32.0), ("sage", 115.0), ("slate", 212.0), ("mauve", 300.0))
BG_LEVELS = (("dark", 62.0), ("", 132.0), ("pale", 202.0))
BG_PATTERNS = ("linen", "wood", "tile", "concrete", "marble")

SPRITE_H = 240      # product sprite height in pixels (before per-shot scaling)
SUPERSAMPLE = 2     # sprites are drawn at this factor and area-downsampled (anti-aliasing)
CANVAS_FACTOR = 1.45  # background canvas size relative to the frame: room for camera moves
COVERAGE = (0.08, 0.16)  # product area as a fraction of the frame (clamped to fit)
MAX_TILT0 = 6.0     # degrees: initial product rotation
SPIN = (2.0, 5.0)   # degrees per second: product rotation speed
SCALE_CHANGE = (0.03, 0.08)  # relative scale change over a shot
DRIFT = (0.10, 0.20)  # product drift speed, fraction of the free range per second
PAN = (0.035, 0.08)   # camera pan speed, fraction of frame width per second
ZOOM = (0.012, 0.028)  # camera zoom rate per second

DEFAULT_SAMPLE = {
    "n_videos": 8,
    "n_products": 5,
    "views_per_product": 2,
    "resolutions": [[320, 180], [256, 144]],
    "fps": [30, 25],
    "cuts_per_video": [2, 4],
    "shot_seconds": [2.6, 4.4],
    "product_image_size": 160,
}


# ----------------------------------------------------------------------------- ids

def video_ids(n_videos: int) -> list[str]:
    return [f"vid{i:03d}" for i in range(n_videos)]


def product_ids(n_products: int) -> list[str]:
    return [f"prod{i:02d}" for i in range(n_products)]


def view_ids(n_views: int) -> list[str]:
    return [f"view{j}" for j in range(n_views)]


def sample_ids(sample_params: dict) -> dict:
    """Ids the sample will produce, from params alone, so the Snakefile can list outputs
    at parse time without reading any file."""
    sp = {**DEFAULT_SAMPLE, **(sample_params or {})}
    views = view_ids(int(sp["views_per_product"]))
    return {"videos": video_ids(int(sp["n_videos"])),
            "products": {pid: list(views) for pid in product_ids(int(sp["n_products"]))}}


def _rng(seed: int, purpose: int, index: int = 0) -> np.random.Generator:
    """Independent stream per (purpose, index): a video's content does not depend on how
    many other videos are generated."""
    return np.random.default_rng([int(seed), purpose, index])


# ----------------------------------------------------------------------------- catalogue

@dataclass(frozen=True)
class Product:
    id: str
    index: int
    category: str
    material: str
    color_name: str
    rgb: tuple[int, int, int]

    @property
    def name(self) -> str:
        return f"{self.color_name} {self.material} {self.category}"

    @property
    def caption(self) -> str:
        return f"{_article(self.color_name)} {self.name}"


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def make_catalogue(seed: int, n_products: int) -> list[Product]:
    """Categories cycle (so all four occur from four products on); colours are a seeded
    permutation of the palette, so products have distinct hues up to len(PALETTE)."""
    rng = _rng(seed, 1)
    order = rng.permutation(len(PALETTE))
    products = []
    for i, pid in enumerate(product_ids(n_products)):
        category = CATEGORIES[i % len(CATEGORIES)]
        color_name, rgb = PALETTE[int(order[i % len(PALETTE)])]
        material = MATERIALS[category][(i // len(CATEGORIES)) % len(MATERIALS[category])]
        products.append(Product(pid, i, category, material, color_name, rgb))
    return products


# ----------------------------------------------------------------------------- drawing

def _shade(rgb, f: float) -> tuple[float, float, float]:
    """Darker, same hue and saturation."""
    return tuple(float(c) * f for c in rgb)


def _tint(rgb, t: float) -> tuple[float, float, float]:
    """Lighter (mixed towards white); keep t small so products stay saturated."""
    return tuple(float(c) + (255.0 - float(c)) * t for c in rgb)


class _Canvas:
    """Supersampled drawing surface: float RGB plus a binary silhouette (alpha)."""

    def __init__(self, w: int, h: int):
        self.w, self.h = w, h
        self.rgb = np.zeros((h, w, 3), np.float32)
        self.alpha = np.zeros((h, w), np.uint8)

    @staticmethod
    def _pts(pts) -> list[np.ndarray]:
        return [np.round(np.asarray(pts, np.float64)).astype(np.int32)]

    def poly(self, pts, color, body: bool = True) -> None:
        p = self._pts(pts)
        cv2.fillPoly(self.rgb, p, color)
        if body:
            cv2.fillPoly(self.alpha, p, 255)

    def rect(self, x0, y0, x1, y1, color, body: bool = True) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], color, body)

    def circle(self, cx, cy, r, color, body: bool = True, thickness: int = -1) -> None:
        c, r = (int(round(cx)), int(round(cy))), int(round(r))
        cv2.circle(self.rgb, c, r, color, thickness)
        if body:
            cv2.circle(self.alpha, c, r, 255, thickness)

    def ellipse(self, cx, cy, ax, ay, start, end, color, thickness: int, body: bool = True) -> None:
        args = ((int(round(cx)), int(round(cy))), (int(round(ax)), int(round(ay))), 0, start, end)
        cv2.ellipse(self.rgb, *args, color, thickness)
        if body:
            cv2.ellipse(self.alpha, *args, 255, thickness)

    def line(self, x0, y0, x1, y1, color, thickness: int) -> None:
        cv2.line(self.rgb, (int(round(x0)), int(round(y0))), (int(round(x1)), int(round(y1))),
                 color, max(1, int(round(thickness))))

    def dashed(self, x0, y0, x1, y1, color, thickness, dash: float) -> None:
        """Stitching: short dashes along a segment."""
        n = max(1, int(math.hypot(x1 - x0, y1 - y0) / (2 * dash)))
        for k in range(n):
            a, b = (2 * k) / (2 * n), (2 * k + 1) / (2 * n)
            self.line(x0 + (x1 - x0) * a, y0 + (y1 - y0) * a, x0 + (x1 - x0) * b,
                      y0 + (y1 - y0) * b, color, thickness)

    def modulate(self, factor: np.ndarray) -> None:
        """Multiply colour by a shading/texture map: brightness changes, hue does not."""
        self.rgb *= np.clip(factor, 0.0, 1.6)[..., None].astype(np.float32)
        np.clip(self.rgb, 0.0, 255.0, out=self.rgb)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Zero-mean, unit-ish noise with feature size ``cell`` pixels (cubic upsampling)."""
    gh, gw = max(2, int(math.ceil(h / cell)) + 2), max(2, int(math.ceil(w / cell)) + 2)
    g = rng.standard_normal((gh, gw)).astype(np.float32)
    big = cv2.resize(g, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    big = big[:h, :w]
    return (big - big.mean()) / (big.std() + 1e-6)


def _draw_watch(cv: _Canvas, p: Product, side: bool) -> None:
    w, h, c = cv.w, cv.h, p.rgb
    strap = _shade(c, 0.55 if p.material == "steel" else 0.75)
    if not side:
        sx0, sx1 = 0.26 * w, 0.66 * w
        cx, cy, r = 0.46 * w, 0.5 * h, 0.42 * w
        cv.rect(sx0, 0.02 * h, sx1, 0.98 * h, strap)
        for x in (sx0 + 0.05 * w, sx1 - 0.05 * w):  # stitching along both strap edges
            cv.dashed(x, 0.03 * h, x, 0.97 * h, _tint(c, 0.3), 0.012 * w, 0.02 * h)
        for k in range(4):  # strap holes
            cv.circle(0.46 * w, 0.80 * h + k * 0.04 * h, 0.025 * w, _shade(c, 0.3), body=False)
        cv.rect(cx + r * 0.95, cy - 0.05 * h * 0.6, cx + r + 0.09 * w, cy + 0.05 * h * 0.6,
                _shade(c, 0.7))  # crown
        cv.circle(cx, cy, r, c)
        cv.circle(cx, cy, r, _shade(c, 0.6), thickness=max(2, int(0.06 * w)))  # bezel
        cv.circle(cx, cy, 0.8 * r, _tint(c, 0.35), body=False)  # dial
        for k in range(12):  # dial ticks
            a = 2 * math.pi * k / 12
            r0 = 0.62 * r if k % 3 == 0 else 0.68 * r
            cv.line(cx + r0 * math.cos(a), cy + r0 * math.sin(a), cx + 0.76 * r * math.cos(a),
                    cy + 0.76 * r * math.sin(a), _shade(c, 0.3), 0.035 * w if k % 3 == 0 else 0.02 * w)
        cv.line(cx, cy, cx + 0.45 * r, cy - 0.3 * r, _shade(c, 0.25), 0.05 * w)  # hour hand
        cv.line(cx, cy, cx - 0.1 * r, cy - 0.68 * r, _shade(c, 0.25), 0.035 * w)  # minute hand
        cv.circle(cx, cy, 0.06 * r, _shade(c, 0.25), body=False)
        y = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
        x = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
        cv.modulate(1.08 - 0.18 * (x * 0.6 + y * 0.4) ** 2)
    else:
        cy, r = 0.5 * h, 0.23 * h
        cv.rect(0.3 * w, 0.02 * h, 0.62 * w, 0.98 * h, strap)  # strap seen edge-on
        cv.rect(0.12 * w, cy - r, 0.82 * w, cy + r, c)  # case band
        cv.rect(0.12 * w, cy - r, 0.82 * w, cy - r + 0.08 * w, _shade(c, 0.6))  # bezel edge
        cv.rect(0.82 * w, cy - 0.04 * h, 0.98 * w, cy + 0.04 * h, _shade(c, 0.7))  # crown
        for k in range(5):  # case grooves
            yy = cy - 0.6 * r + k * 0.3 * r
            cv.line(0.2 * w, yy, 0.74 * w, yy, _shade(c, 0.75), 0.04 * w)
        x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
        cv.modulate(np.repeat(0.85 + 0.25 * np.sin(np.pi * x), h, 0))


def _draw_bottle(cv: _Canvas, p: Product, side: bool) -> None:
    w, h, c = cv.w, cv.h, p.rgb
    cv.rect(0.06 * w, 0.34 * h, 0.94 * w, 0.98 * h, c)  # body
    cv.poly([(0.06 * w, 0.38 * h), (0.94 * w, 0.38 * h), (0.68 * w, 0.2 * h), (0.32 * w, 0.2 * h)], c)
    cv.rect(0.34 * w, 0.07 * h, 0.66 * w, 0.22 * h, c)  # neck
    cv.rect(0.30 * w, 0.0 * h, 0.70 * w, 0.1 * h, _shade(c, 0.45))  # cap
    for k in range(5):  # cap ridges
        x = 0.34 * w + k * 0.08 * w
        cv.line(x, 0.01 * h, x, 0.09 * h, _shade(c, 0.3), 0.02 * w)
    label = _tint(c, 0.3) if p.material == "glass" else _shade(c, 0.7)
    y0, y1 = 0.5 * h, 0.8 * h
    cv.rect(0.06 * w, y0, 0.94 * w, y1, label, body=False)  # label band
    cv.line(0.06 * w, y0 + 0.03 * h, 0.94 * w, y0 + 0.03 * h, _shade(c, 0.45), 0.012 * h)
    cv.line(0.06 * w, y1 - 0.03 * h, 0.94 * w, y1 - 0.03 * h, _shade(c, 0.45), 0.012 * h)
    if not side:
        cv.poly([(0.5 * w, y0 + 0.07 * h), (0.7 * w, 0.65 * h), (0.5 * w, y1 - 0.07 * h),
                 (0.3 * w, 0.65 * h)], _shade(c, 0.5), body=False)  # logo diamond
        cv.rect(0.18 * w, 0.36 * h, 0.26 * w, 0.48 * h, _tint(c, 0.3), body=False)  # highlight
        cv.rect(0.18 * w, 0.82 * h, 0.26 * w, 0.95 * h, _tint(c, 0.3), body=False)
    else:
        cv.line(0.5 * w, 0.36 * h, 0.5 * w, 0.97 * h, _shade(c, 0.6), 0.03 * w)  # mould seam
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    cv.modulate(np.repeat(0.78 + 0.32 * np.sin(np.pi * x), h, 0))  # cylinder shading


def _draw_bag(cv: _Canvas, p: Product, side: bool, rng: np.random.Generator) -> None:
    w, h, c = cv.w, cv.h, p.rgb
    top = 0.36 * h
    if not side:
        cv.ellipse(0.5 * w, top, 0.26 * w, 0.3 * h, 180, 360, _shade(c, 0.6), int(0.05 * h))  # handle
        body = [(0.16 * w, top), (0.84 * w, top), (0.98 * w, 0.98 * h), (0.02 * w, 0.98 * h)]
        cv.poly(body, c)
        if p.material == "canvas":
            for k in range(6):  # woven stripes
                y = top + (k + 0.5) * 0.1 * h
                cv.line(0.05 * w, y, 0.95 * w, y, _shade(c, 0.72), 0.025 * h)
        else:
            cv.poly([(0.16 * w, top), (0.84 * w, top), (0.8 * w, 0.62 * h), (0.5 * w, 0.7 * h),
                     (0.2 * w, 0.62 * h)], _shade(c, 0.8), body=False)  # flap
            cv.rect(0.46 * w, 0.63 * h, 0.54 * w, 0.71 * h, _tint(c, 0.35), body=False)  # clasp
        st = _tint(c, 0.4)  # stitching inset along the sides and bottom
        cv.dashed(0.2 * w, top + 0.03 * h, 0.07 * w, 0.94 * h, st, 0.008 * h, 0.015 * h)
        cv.dashed(0.8 * w, top + 0.03 * h, 0.93 * w, 0.94 * h, st, 0.008 * h, 0.015 * h)
        cv.dashed(0.08 * w, 0.94 * h, 0.92 * w, 0.94 * h, st, 0.008 * h, 0.015 * h)
    else:
        cv.ellipse(0.5 * w, top, 0.08 * w, 0.3 * h, 180, 360, _shade(c, 0.6), int(0.05 * h))
        cv.poly([(0.3 * w, top), (0.7 * w, top), (0.96 * w, 0.98 * h), (0.04 * w, 0.98 * h)],
                _shade(c, 0.9))  # gusset
        cv.line(0.5 * w, top, 0.5 * w, 0.98 * h, _shade(c, 0.6), 0.02 * w)  # fold
        cv.dashed(0.3 * w, top + 0.02 * h, 0.08 * w, 0.95 * h, _tint(c, 0.4), 0.008 * h, 0.015 * h)
        cv.dashed(0.7 * w, top + 0.02 * h, 0.92 * w, 0.95 * h, _tint(c, 0.4), 0.008 * h, 0.015 * h)
    grain = _smooth_noise(rng, h, w, 3.0)  # leather/canvas grain
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    cv.modulate(1.05 - 0.2 * y + 0.05 * grain)


def _draw_box(cv: _Canvas, p: Product, side: bool) -> None:
    w, h, c = cv.w, cv.h, p.rgb
    cv.rect(0.04 * w, 0.14 * h, 0.96 * w, 0.98 * h, c)  # box
    if p.material == "gift":  # diagonal stripes
        for k in range(-8, 16):
            x = k * 0.14 * w
            cv.line(x, 0.98 * h, x + 0.84 * h, 0.14 * h, _tint(c, 0.25), 0.035 * w)
    else:  # cardboard: tape band and printed arrows
        cv.rect(0.42 * w, 0.14 * h, 0.58 * w, 0.98 * h, _shade(c, 0.75), body=False)
        for x in (0.2 * w, 0.8 * w):
            cv.poly([(x, 0.55 * h), (x - 0.07 * w, 0.65 * h), (x + 0.07 * w, 0.65 * h)],
                    _shade(c, 0.45), body=False)
            cv.rect(x - 0.025 * w, 0.65 * h, x + 0.025 * w, 0.78 * h, _shade(c, 0.45), body=False)
    cv.rect(0.0, 0.08 * h, 1.0 * w - 1, 0.3 * h, _shade(c, 0.82))  # lid
    cv.line(0.0, 0.3 * h, w, 0.3 * h, _shade(c, 0.45), 0.02 * h)  # lid line
    if p.material == "gift":
        rib = _shade(c, 0.5)
        cv.rect(0.45 * w, 0.08 * h, 0.55 * w, 0.98 * h, rib, body=False)  # ribbon
        if not side:
            cv.rect(0.04 * w, 0.58 * h, 0.96 * w, 0.66 * h, rib, body=False)
            cv.circle(0.42 * w, 0.08 * h, 0.07 * w, rib)  # bow
            cv.circle(0.58 * w, 0.08 * h, 0.07 * w, rib)
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    cv.modulate(np.repeat(1.06 - 0.16 * y, w, 1) * (0.82 if side else 1.0))


# Front width and side depth relative to sprite height, per category.
PROPORTIONS = {"watch": (0.56, 0.2), "bottle": (0.42, 0.24), "bag": (0.95, 0.4), "box": (0.85, 0.5)}


def _draw_part(p: Product, side: bool, h: int) -> _Canvas:
    front_w, depth = PROPORTIONS[p.category]
    cv = _Canvas(max(4, int(round((depth if side else front_w) * h))), h)
    rng = _rng(0, 7, p.index)  # grain pattern fixed per product, identical in every view
    if p.category == "watch":
        _draw_watch(cv, p, side)
    elif p.category == "bottle":
        _draw_bottle(cv, p, side)
    elif p.category == "bag":
        _draw_bag(cv, p, side, rng)
    else:
        _draw_box(cv, p, side)
    return cv


@dataclass(frozen=True)
class Sprite:
    """Premultiplied RGB (h, w, 3) float32 and alpha (h, w) float32 in [0, 1]."""
    premult: np.ndarray
    alpha: np.ndarray

    @functools.cached_property
    def bbox(self) -> tuple[float, float, float, float]:
        """Tight box (x0, y0, x1, y1) of the visible product, in pixel-edge coordinates."""
        ys, xs = np.nonzero(self.alpha > 0)
        return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)

    @property
    def area(self) -> float:
        return float(self.alpha.sum())

    def rgba(self) -> np.ndarray:
        return np.dstack([self.premult, self.alpha]).astype(np.float32)


def yaw_of_view(j: int, n_views: int) -> float:
    """view0 is the front; further views turn the product up to a full side view (90 deg)."""
    return 0.0 if n_views <= 1 else 90.0 * j / (n_views - 1)


def render_product(p: Product, view: int, n_views: int, height: int = SPRITE_H) -> Sprite:
    """Front face foreshortened by cos(yaw) beside the side face scaled by sin(yaw): a cheap
    turned view with a visibly different silhouette and aspect ratio."""
    hs = height * SUPERSAMPLE
    yaw = math.radians(yaw_of_view(view, n_views))
    parts = []
    for side, f in ((False, math.cos(yaw)), (True, math.sin(yaw))):
        if f < 0.05:
            continue
        cv = _draw_part(p, side, hs)
        nw = max(2, int(round(cv.w * f)))
        rgb = cv2.resize(cv.rgb, (nw, hs), interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(cv.alpha, (nw, hs), interpolation=cv2.INTER_NEAREST)
        parts.append((rgb * (alpha[..., None] > 0), alpha))
    rgb = np.concatenate([q[0] for q in parts], axis=1)
    alpha = np.concatenate([q[1] for q in parts], axis=1).astype(np.float32) / 255.0
    pad = 2 * SUPERSAMPLE  # transparent border so warps never clip the silhouette
    rgb = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    alpha = cv2.copyMakeBorder(alpha, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    hh, ww = rgb.shape[0] // SUPERSAMPLE, rgb.shape[1] // SUPERSAMPLE
    rgb = rgb[: hh * SUPERSAMPLE, : ww * SUPERSAMPLE]
    alpha = alpha[: hh * SUPERSAMPLE, : ww * SUPERSAMPLE]
    # Colour outside the silhouette is 0, so the area average is already premultiplied.
    premult = cv2.resize(rgb, (ww, hh), interpolation=cv2.INTER_AREA)
    a = cv2.resize(alpha, (ww, hh), interpolation=cv2.INTER_AREA)
    return Sprite(premult.astype(np.float32), np.clip(a, 0.0, 1.0).astype(np.float32))


def product_image(sprite: Sprite, size: int, fill: float = 0.8) -> np.ndarray:
    """Square RGB catalogue image: the sprite scaled to ``fill`` of the side, centred on
    pure white (255) so white-background matting recovers it."""
    x0, y0, x1, y1 = (int(v) for v in sprite.bbox)
    rgba = sprite.rgba()[y0:y1, x0:x1]
    s = fill * size / max(x1 - x0, y1 - y0)
    nw, nh = max(1, int(round((x1 - x0) * s))), max(1, int(round((y1 - y0) * s)))
    small = cv2.resize(rgba, (nw, nh), interpolation=cv2.INTER_AREA)
    out = np.full((size, size, 3), 255.0, np.float32)
    ox, oy = (size - nw) // 2, (size - nh) // 2
    region = out[oy:oy + nh, ox:ox + nw]
    region[:] = small[..., :3] + (1.0 - small[..., 3:4]) * region
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- backgrounds

def _pattern(rng: np.random.Generator, name: str, h: int, w: int) -> np.ndarray:
    """Brightness multiplier (around 1) with the named texture. Kept smooth at the pixel
    scale so sub-pixel camera motion changes few pixel values (no false cuts)."""
    lf = _smooth_noise(rng, h, w, 40.0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if name == "linen":
        rows = cv2.GaussianBlur(rng.standard_normal((h, 1)).astype(np.float32), (1, 0), 1.2)
        cols = cv2.GaussianBlur(rng.standard_normal((1, w)).astype(np.float32), (0, 1), 1.2)
        weave = 0.5 * np.sin(2 * np.pi * xx / 5.0) * np.sin(2 * np.pi * yy / 5.0)
        m = 1.0 + 0.035 * (rows + cols) + 0.03 * weave + 0.06 * lf
    elif name == "wood":
        warp = _smooth_noise(rng, h, w, 30.0)
        period = rng.uniform(14.0, 22.0)
        grain = np.sin(2 * np.pi * (yy + 6.0 * warp + 0.08 * xx) / period)
        streaks = cv2.resize(rng.standard_normal((h // 2 + 1, w // 24 + 2)).astype(np.float32),
                             (w, h), interpolation=cv2.INTER_CUBIC)
        m = 1.0 + 0.09 * grain + 0.03 * streaks + 0.05 * lf
    elif name == "tile":
        size = rng.uniform(0.16, 0.24) * h + 8.0
        tx, ty = np.floor(xx / size).astype(np.int32), np.floor(yy / size).astype(np.int32)
        per_tile = rng.uniform(-0.06, 0.06, size=(int(h / size) + 2, int(w / size) + 2)).astype(np.float32)
        fx, fy = xx - tx * size, yy - ty * size
        grout = ((fx < 2.5) | (fy < 2.5)).astype(np.float32)
        grout = cv2.GaussianBlur(grout, (0, 0), 0.8)
        m = (1.0 + per_tile[ty, tx] + 0.04 * lf) * (1.0 - 0.25 * grout)
    elif name == "concrete":
        mid = _smooth_noise(rng, h, w, 9.0)
        fine = _smooth_noise(rng, h, w, 3.0)
        m = 1.0 + 0.08 * lf + 0.04 * mid + 0.02 * fine
    else:  # marble: soft veins
        warp = _smooth_noise(rng, h, w, 25.0)
        veins = np.abs(np.sin(2 * np.pi * (xx * 0.6 + yy * 0.8 + 25.0 * warp) / rng.uniform(60, 90)))
        m = 1.0 + 0.05 * lf - 0.14 * (1.0 - veins) ** 6
    return np.clip(m, 0.72, 1.22).astype(np.float32)


def background_canvas(rng: np.random.Generator, level: int, family: int, pattern: str,
                      h: int, w: int) -> np.ndarray:
    """Muted colour times a brightness-only texture: hue and saturation stay flat."""
    hue = (BG_FAMILIES[family][1] + rng.uniform(-8, 8)) / 360.0
    sat = rng.uniform(0.14, 0.26)
    val = (BG_LEVELS[level][1] + rng.uniform(-6, 6)) / 255.0
    base = np.array(colorsys.hsv_to_rgb(hue % 1.0, sat, val), np.float32) * 255.0
    return _pattern(rng, pattern, h, w)[..., None] * base[None, None, :]


def background_name(level: int, family: int, pattern: str) -> str:
    tone = BG_LEVELS[level][0]
    return " ".join(x for x in (tone, BG_FAMILIES[family][0], pattern) if x)


# ----------------------------------------------------------------------------- shots

@dataclass
class Shot:
    start: int
    n: int
    level: int
    family: int
    pattern: str
    camera: str
    cam: np.ndarray   # (n, 2, 3) inverse affine: frame -> canvas coordinates
    pose: np.ndarray  # (n, 4): centre x, centre y, angle (deg), scale (relative to sprite)

    @property
    def background(self) -> str:
        return background_name(self.level, self.family, self.pattern)


def _pick_other(rng: np.random.Generator, n: int, prev: int | None) -> int:
    choices = [i for i in range(n) if i != prev]
    return int(choices[rng.integers(len(choices))])


def camera_path(rng: np.random.Generator, n: int, fps: float, w: int, h: int,
                cw: int, ch: int) -> tuple[np.ndarray, str]:
    """Linear pan and/or slow zoom inside the canvas; returns per-frame inverse affines."""
    mode = ("pan", "zoom", "pan+zoom")[int(rng.integers(3))]
    t = np.arange(n, dtype=np.float64) / fps
    dur = max(t[-1], 1e-6)
    z0 = z1 = 1.0
    words = []
    if "zoom" in mode:
        rate = rng.uniform(*ZOOM)
        zin = bool(rng.integers(2))
        z0, z1 = (1.0, 1.0 + rate * dur) if zin else (1.0 + rate * dur, 1.0)
        words.append(f"zooming {'in' if zin else 'out'} slowly")
    zoom = z0 + (z1 - z0) * t / dur
    vw, vh = w / zoom, h / zoom  # viewport in canvas pixels
    if "pan" in mode:
        ang = rng.uniform(0, 2 * np.pi)
        speed = rng.uniform(*PAN) * w
        dx, dy = math.cos(ang) * speed * dur, math.sin(ang) * speed * dur * 0.6
        words.insert(0, "panning " + (("right" if dx > 0 else "left") if abs(dx) >= abs(dy)
                                      else ("down" if dy > 0 else "up")))
    else:
        dx = dy = 0.0
    # Keep every viewport of the path inside the canvas: zooming about the viewport centre
    # moves its edges by up to half the size change, and the pan must fit in what is left.
    grow_x, grow_y = (vw.max() - vw[0]) / 2, (vh.max() - vh[0]) / 2
    room_x, room_y = cw - vw.max() - grow_x, ch - vh.max() - grow_y
    shrink = min(1.0, 0.95 * room_x / max(abs(dx), 1e-9), 0.95 * room_y / max(abs(dy), 1e-9))
    dx, dy = dx * shrink, dy * shrink
    ox0 = rng.uniform(grow_x + max(0.0, -dx), cw - vw.max() - max(0.0, dx))
    oy0 = rng.uniform(grow_y + max(0.0, -dy), ch - vh.max() - max(0.0, dy))
    cx = ox0 + vw[0] / 2 + dx * t / dur
    cy = oy0 + vh[0] / 2 + dy * t / dur
    ox, oy = cx - vw / 2, cy - vh / 2
    cam = np.zeros((n, 2, 3), np.float64)
    cam[:, 0, 0] = 1.0 / zoom
    cam[:, 1, 1] = 1.0 / zoom
    cam[:, 0, 2] = ox
    cam[:, 1, 2] = oy
    return cam, " while ".join(words)


def _extents(half_w: float, half_h: float, angle_deg: np.ndarray, scale: np.ndarray):
    a = np.radians(angle_deg)
    ca, sa = np.abs(np.cos(a)), np.abs(np.sin(a))
    return scale * (half_w * ca + half_h * sa), scale * (half_w * sa + half_h * ca)


def product_path(rng: np.random.Generator, n: int, fps: float, w: int, h: int, sprite: Sprite,
                 prev_end: tuple[float, float] | None) -> np.ndarray:
    """Smooth drift, slow rotation and mild scale change, fully inside the frame.

    The path is drawn in normalised coordinates u, v in [0, 1] of the free range that the
    current rotated extent leaves, so the product never leaves the frame by construction.
    """
    t = np.arange(n, dtype=np.float64) / fps
    x0, y0, x1, y1 = sprite.bbox
    hw, hh = (x1 - x0) / 2 + 1.0, (y1 - y0) / 2 + 1.0  # +1: bilinear footprint
    a0 = rng.uniform(-MAX_TILT0, MAX_TILT0)
    spin = rng.uniform(*SPIN) * (1 if rng.integers(2) else -1)
    angle = a0 + spin * t
    dscale = rng.uniform(*SCALE_CHANGE) * (1 if rng.integers(2) else -1)
    rel = 1.0 + dscale * t / max(t[-1], 1e-6)
    margin = max(4.0, 0.04 * min(w, h))
    # Base scale from the target coverage, clamped so the largest rotated extent fits.
    s = math.sqrt(rng.uniform(*COVERAGE) * w * h / sprite.area)
    ex1, ey1 = _extents(hw, hh, np.abs(angle).max(keepdims=True), np.array([rel.max()]))
    fit = min((w / 2 - margin) * 0.8 / ex1[0], (h / 2 - margin) * 0.8 / ey1[0])
    s = min(s, fit)
    scale = s * rel
    ex, ey = _extents(hw, hh, angle, scale)
    # Start away from where the previous shot ended: a cut also moves the product.
    if prev_end is None:
        u0, v0 = rng.uniform(0.15, 0.85, size=2)
    else:
        u0 = rng.uniform(0.1, 0.35) if prev_end[0] > 0.5 else rng.uniform(0.65, 0.9)
        v0 = rng.uniform(0.1, 0.35) if prev_end[1] > 0.5 else rng.uniform(0.65, 0.9)
    # Drift towards the far side, never further than 0.05 from it (long shots included).
    du = min(rng.uniform(*DRIFT) * t[-1], 0.95 - u0 if u0 < 0.5 else u0 - 0.05) * (1 if u0 < 0.5 else -1)
    dv = min(rng.uniform(*DRIFT) * t[-1] * 0.6, 0.95 - v0 if v0 < 0.5 else v0 - 0.05) * (1 if v0 < 0.5 else -1)
    tau = t / max(t[-1], 1e-6)
    ease = tau * tau * (3 - 2 * tau)  # smoothstep: starts and ends gently
    wob = 0.04 * np.sin(2 * np.pi * (tau * rng.uniform(0.5, 1.0) + rng.uniform()))
    u = np.clip(u0 + du * ease + wob, 0.0, 1.0)
    v = np.clip(v0 + dv * ease, 0.0, 1.0)
    cx = ex + margin + u * (w - 2 * (ex + margin))
    cy = ey + margin + v * (h - 2 * (ey + margin))
    return np.stack([cx, cy, angle, scale], axis=1)


def _norm_pos(pose_row: np.ndarray, w: int, h: int) -> tuple[float, float]:
    return float(pose_row[0] / w), float(pose_row[1] / h)


def plan_shots(rng: np.random.Generator, sp: dict, fps: float, w: int, h: int,
               sprite: Sprite) -> list[Shot]:
    lo, hi = (int(x) for x in sp["cuts_per_video"])
    n_shots = int(rng.integers(lo, hi + 1)) + 1
    s_lo, s_hi = (float(x) for x in sp["shot_seconds"])
    cw, ch = int(math.ceil(w * CANVAS_FACTOR)), int(math.ceil(h * CANVAS_FACTOR))
    shots, start, prev, prev_end = [], 0, None, None
    for _ in range(n_shots):
        n = max(2, int(round(rng.uniform(s_lo, s_hi) * fps)))
        level = _pick_other(rng, len(BG_LEVELS), prev.level if prev else None)
        family = _pick_other(rng, len(BG_FAMILIES), prev.family if prev else None)
        pi = _pick_other(rng, len(BG_PATTERNS), BG_PATTERNS.index(prev.pattern) if prev else None)
        cam, camera = camera_path(rng, n, fps, w, h, cw, ch)
        pose = product_path(rng, n, fps, w, h, sprite, prev_end)
        shot = Shot(start, n, level, family, BG_PATTERNS[pi], camera, cam, pose)
        shots.append(shot)
        prev, prev_end, start = shot, _norm_pos(pose[-1], w, h), start + n
    return shots


# ----------------------------------------------------------------------------- rendering

def _sprite_matrix(sprite: Sprite, pose: np.ndarray, base: float) -> np.ndarray:
    """Affine from the (pre-scaled by ``base``) sprite to the frame: rotate and scale about
    the product's box centre, then move that centre to the pose position."""
    x0, y0, x1, y1 = sprite.bbox
    cx, cy = (x0 + x1) / 2 * base, (y0 + y1) / 2 * base
    m = cv2.getRotationMatrix2D((cx, cy), float(pose[2]), float(pose[3] / base))
    m[0, 2] += pose[0] - cx
    m[1, 2] += pose[1] - cy
    return m


def render_shot(shot: Shot, canvas: np.ndarray, sprite: Sprite, w: int, h: int):
    """Frames (n, h, w, 3) uint8 and masks (n, h, w) bool of one shot."""
    base = float(np.median(shot.pose[:, 3]))
    # Area-resample once to about the shot's scale; per-frame warps then scale by ~1 only.
    rgba = sprite.rgba()
    sh, sw = rgba.shape[:2]
    small = cv2.resize(rgba, (max(1, int(round(sw * base))), max(1, int(round(sh * base)))),
                       interpolation=cv2.INTER_AREA)
    base_x = small.shape[1] / sw
    frames = np.empty((shot.n, h, w, 3), np.uint8)
    masks = np.empty((shot.n, h, w), bool)
    for k in range(shot.n):
        bg = cv2.warpAffine(canvas, shot.cam[k], (w, h),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
        m = _sprite_matrix(sprite, shot.pose[k], base_x)
        fg = cv2.warpAffine(small, m, (w, h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        a = np.clip(fg[..., 3:4], 0.0, 1.0)
        frames[k] = np.clip(np.rint(fg[..., :3] + (1.0 - a) * bg), 0, 255).astype(np.uint8)
        masks[k] = a[..., 0] > 0.5
    return frames, masks


@dataclass(frozen=True)
class VideoSpec:
    id: str
    index: int
    width: int
    height: int
    fps: float
    product: Product


def video_specs(sp: dict, products: list[Product]) -> list[VideoSpec]:
    """Resolutions cycle over videos; the fps cycle advances one extra step every
    lcm(len(resolutions), len(fps)) videos so that every (resolution, fps) pair occurs and
    the first two videos already differ in both."""
    res, fpss = [tuple(int(v) for v in r) for r in sp["resolutions"]], list(sp["fps"])
    nr, nf = len(res), len(fpss)
    period = nr * nf // math.gcd(nr, nf)
    specs = []
    for i, vid in enumerate(video_ids(int(sp["n_videos"]))):
        c = i % (nr * nf)
        w, h = res[c % nr]
        fps = fpss[(c % nf + c // period) % nf]
        specs.append(VideoSpec(vid, i, w, h, fps, products[i % len(products)]))
    return specs


def _caption(spec: VideoSpec, shots: list[Shot]) -> str:
    names = []
    for s in shots:
        if s.background not in names:
            names.append(s.background)
    backs = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    cams = sorted({s.camera.split(" while ")[0].split(" ")[0] for s in shots})
    return (f"{spec.product.caption} turning slowly on {backs} backdrops, "
            f"camera {' and '.join(cams)}")


def render_video(spec: VideoSpec, sp: dict, seed: int, sprite: Sprite):
    """Plan and render one video; returns (frames, masks, shots)."""
    rng = _rng(seed, 2, spec.index)
    w, h = spec.width, spec.height
    shots = plan_shots(rng, sp, spec.fps, w, h, sprite)
    cw, ch = int(math.ceil(w * CANVAS_FACTOR)), int(math.ceil(h * CANVAS_FACTOR))
    frames, masks = [], []
    for s in shots:
        canvas = background_canvas(rng, s.level, s.family, s.pattern, ch, cw)
        f, m = render_shot(s, canvas, sprite, w, h)
        frames.append(f)
        masks.append(m)
    return np.concatenate(frames), np.concatenate(masks), shots


def truth_record(spec: VideoSpec, shots: list[Shot], n_frames: int) -> dict:
    return {
        "video": spec.id, "fps": spec.fps, "width": spec.width, "height": spec.height,
        "n_frames": n_frames, "product_id": spec.product.id,
        "cuts": [s.start for s in shots[1:]],
        "shots": [{"start_frame": s.start, "end_frame": s.start + s.n,
                   "background": s.background, "camera": s.camera} for s in shots],
    }


# ----------------------------------------------------------------------------- driver

def _check(sp: dict) -> None:
    """Fail fast, naming the key, on values that would give a broken sample."""
    if int(sp["n_videos"]) < 1 or int(sp["n_products"]) < 1 or int(sp["views_per_product"]) < 1:
        raise ValueError("sample.n_videos, sample.n_products and sample.views_per_product must be >= 1")
    for r in sp["resolutions"]:
        if len(r) != 2 or int(r[0]) % 2 or int(r[1]) % 2 or min(int(r[0]), int(r[1])) < 32:
            raise ValueError(f"sample.resolutions: {r} must be [even width, even height] >= 32")
    if not sp["fps"] or min(float(f) for f in sp["fps"]) <= 0:
        raise ValueError("sample.fps must be a non-empty list of positive rates")
    lo, hi = sp["cuts_per_video"]
    if not 0 <= int(lo) <= int(hi):
        raise ValueError("sample.cuts_per_video must be [lo, hi] with 0 <= lo <= hi")
    a, b = sp["shot_seconds"]
    if not 0 < float(a) <= float(b):
        raise ValueError("sample.shot_seconds must be [lo, hi] with 0 < lo <= hi")


def _write_products(out: Path, products: list[Product], n_views: int, size: int) -> tuple[list, dict]:
    rows, sprites = [], {}
    for p in products:
        views = []
        for j, view in enumerate(view_ids(n_views)):
            sprite = render_product(p, j, n_views)
            if j == 0:
                sprites[p.id] = sprite  # videos show the front view
            rel = f"products/{p.id}/{view}.png"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            write_png(out / rel, product_image(sprite, size))
            views.append({"view": view, "path": rel})
        rows.append({"id": p.id, "category": p.category, "name": p.name, "color": p.color_name,
                     "caption": p.caption, "views": views})
    return rows, sprites


def _write_one_video(out: Path, spec: VideoSpec, sp: dict, seed: int, sprite: Sprite,
                     vp: dict) -> dict:
    """Render, encode and write the ground truth of one video; returns its manifest row."""
    frames, masks, shots = render_video(spec, sp, seed, sprite)
    rel = f"videos/{spec.id}.mp4"
    write_video(out / rel, frames, spec.fps, crf=int(vp["crf"]), preset=str(vp["preset"]),
                threads=int(vp["threads"]))
    write_json(out / "truth" / f"{spec.id}.json", truth_record(spec, shots, len(frames)))
    save_masks(out / "truth" / f"{spec.id}.masks.npy.gz", masks)
    log.info("%s: %dx%d @ %s fps, %d frames, cuts %s, product %s", spec.id, spec.width,
             spec.height, spec.fps, len(frames), [s.start for s in shots[1:]], spec.product.id)
    return {"id": spec.id, "path": rel, "category": spec.product.category,
            "caption": _caption(spec, shots), "product_id": spec.product.id,
            "width": spec.width, "height": spec.height, "fps": spec.fps, "n_frames": len(frames)}


def generate_sample(out_dir: Path, params: dict) -> dict:
    """Write the whole sample into ``out_dir`` (replaced atomically) and return the manifest.

    Videos are independent, so two run at a time: one renders (numpy/OpenCV release the
    GIL) while the other waits on its ffmpeg encode. Output bytes do not depend on this.
    """
    out_dir = Path(out_dir)
    seed = int(params.get("seed", 0))
    sp = {**DEFAULT_SAMPLE, **(params.get("sample") or {})}
    _check(sp)
    vp = {"crf": 17, "preset": "medium", "threads": 1, **(params.get("video") or {})}
    products = make_catalogue(seed, int(sp["n_products"]))
    with atomic_path(out_dir, directory=True) as tmp:
        product_rows, sprites = _write_products(tmp, products, int(sp["views_per_product"]),
                                                int(sp["product_image_size"]))
        (tmp / "videos").mkdir()
        (tmp / "truth").mkdir()
        specs = video_specs(sp, products)
        workers = max(1, min(2, os.cpu_count() or 1, len(specs)))
        with ThreadPoolExecutor(workers) as pool:
            video_rows = list(pool.map(
                lambda spec: _write_one_video(tmp, spec, sp, seed, sprites[spec.product.id], vp), specs))
        manifest = {"videos": video_rows, "products": product_rows}
        write_json(tmp / "manifest.json", manifest)
    return manifest


def main(argv: list[str] | None = None) -> None:
    cli.setup_logging()
    ap = cli.parser("Generate the embedded sample: procedural product-showcase videos with "
                    "ground-truth cuts and masks, plus a product catalogue.")
    ap.add_argument("--out", required=True, type=Path, help="output directory (replaced)")
    args = ap.parse_args(argv)
    manifest = generate_sample(args.out, args.params)
    log.info("wrote %d videos and %d products to %s", len(manifest["videos"]),
             len(manifest["products"]), args.out)
