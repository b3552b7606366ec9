"""The evaluation report: one self-contained HTML page with metrics and side-by-side animations.

Animations are GIFs (PIL, no timestamps) stored beside the page under media/, one per
benchmark item, with columns template | product | ground truth | teacher | students.
"""
from __future__ import annotations

import html
import io
import os

import numpy as np
from PIL import Image, ImageDraw

from .io.atomic import write_bytes, write_text


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


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
    return html.escape(str(v))


def table_html(columns: list[str], rows: list[list]) -> str:
    """An HTML table; the first column is a row header."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr><th>" + _fmt(r[0]) + "</th>" + "".join(f"<td>{_fmt(v)}</td>" for v in r[1:]) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render(out_html: str | os.PathLike, title: str, metrics: dict, items: list[dict], notes: list[str],
           tables: list[tuple[str, list[str], list[list]]] = ()) -> None:
    """metrics: {"models": {name: {metric: value}}}; items: [{"key", "caption", "gif" (relative path)}];
    tables: further (heading, columns, rows) sections after the models' table."""
    models = metrics["models"]
    cols = sorted({k for m in models.values() for k in m})
    table = table_html(["model"] + cols, [[name] + [m.get(c, "") for c in cols] for name, m in models.items()])
    table += "".join(f"<h2>{html.escape(h)}</h2>" + table_html(c, r) for h, c, r in tables)
    gallery = "".join(
        f"<figure><img src='{html.escape(it['gif'])}' alt='{html.escape(it['key'])}'>"
        f"<figcaption><code>{html.escape(it['key'])}</code> — {html.escape(it['caption'])}</figcaption></figure>"
        for it in items)
    note_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
figure{{margin:1em 0}}img{{image-rendering:pixelated;border:1px solid #ddd}}</style></head>
<body><h1>{html.escape(title)}</h1>
<h2>Metrics (benchmark split)</h2>{table}
<ul>{note_html}</ul>
<h2>Side by side: template | product | ground truth | teacher | students</h2>{gallery}
</body></html>
"""
    write_text(out_html, page)
