"""The dataset card as plots and a page: hand-written SVG (no plotting library), byte-reproducible.

Written by the pack stage into the dataset directory::

    plots/stages.svg        survivors and rejects of every stage (each in its own unit)
    plots/rejections.svg    rejections by stage and reason (and the pairs stage's candidate filter)
    plots/categories.svg    category distribution: source videos, products, triplets (from -> to)
    plots/hist_<metric>.svg the L1/L2 score histograms, with the filter's threshold when known
    card.html               one self-contained page: the card's tables and the plots inline

The evaluation report embeds the same SVG files in its "Dataset" section.
"""
from __future__ import annotations

import html
from pathlib import Path

from genbuild.io.atomic import write_text

OK, REJ, OTHER = "#4c9a5b", "#c8553d", "#5b7fb0"
SERIES_COLOURS = ["#5b7fb0", "#e0a030", "#4c9a5b", "#8e6bb0"]
THRESHOLD_KEYS = {"bg_ssim": ("l1", "min_bg_ssim"), "presence": ("l1", "min_presence"),
                  "warp_error": ("l2", "max_warp_error"), "sharpness_ratio": ("l2", "min_sharpness_ratio")}
FONT = "font-family='sans-serif' font-size='12'"


def _e(s) -> str:
    return html.escape(str(s), quote=True)


def _n(x: float) -> str:
    """Coordinates with one decimal, no trailing '.0': stable text for stable bytes."""
    s = f"{x:.1f}"
    return s[:-2] if s.endswith(".0") else s


def _svg(width: float, height: float, body: list[str], title: str) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{_n(width)}' height='{_n(height)}' "
            f"viewBox='0 0 {_n(width)} {_n(height)}' {FONT}><title>{_e(title)}</title>"
            f"<rect width='100%' height='100%' fill='white'/>"
            f"<text x='8' y='18' font-size='14' font-weight='bold'>{_e(title)}</text>"
            + "".join(body) + "</svg>\n")


def hbar_svg(title: str, sections: list[tuple[str | None, list[tuple[str, list[float]]]]],
             series: list[tuple[str, str]], width: int = 760, label_width: int = 260) -> str:
    """Horizontal bars, stacked over ``series`` [(name, colour)]; each section has its own scale."""
    row_h, bar_h, y = 20, 14, 30
    body: list[str] = []
    if len(series) > 1:
        x = label_width
        for name, colour in series:
            body.append(f"<rect x='{_n(x)}' y='{y}' width='10' height='10' fill='{colour}'/>"
                        f"<text x='{_n(x + 14)}' y='{y + 9}'>{_e(name)}</text>")
            x += 24 + 7 * len(name)
        y += 18
    plot_w = width - label_width - 70
    if not any(rows for _, rows in sections):
        body.append(f"<text x='8' y='{y + 14}' fill='#666'>(none)</text>")
        y += row_h
    for sub, rows in sections:
        if sub:
            body.append(f"<text x='8' y='{y + 13}' font-weight='bold'>{_e(sub)}</text>")
            y += row_h
        top = max([sum(v) for _, v in rows] + [1])
        for label, values in rows:
            body.append(f"<text x='{label_width - 6}' y='{y + 11}' text-anchor='end'>{_e(label)}</text>")
            x = float(label_width)
            for (name, colour), v in zip(series, values):
                w = plot_w * v / top
                if v > 0:
                    body.append(f"<rect x='{_n(x)}' y='{y}' width='{_n(max(w, 1.0))}' height='{bar_h}' "
                                f"fill='{colour}'><title>{_e(label)}: {_e(name)} {_e(v)}</title></rect>")
                x += w
            body.append(f"<text x='{_n(x + 4)}' y='{y + 11}'>"
                        f"{_e(' / '.join(str(int(v)) for v in values))}</text>")
            y += row_h
        y += 6
    return _svg(width, y + 8, body, title)


def histogram_svg(title: str, hist: dict, threshold: float | None = None, threshold_label: str = "",
                  width: int = 480, height: int = 240) -> str:
    """A histogram from the card's {"edges", "counts", "underflow", "overflow", "n", "mean"}."""
    left, right, top, bottom = 44, 16, 30, 46
    pw, ph = width - left - right, height - top - bottom
    edges, counts = hist["edges"], hist["counts"]
    lo, hi = float(edges[0]), float(edges[-1])
    cmax = max(counts + [1])
    sx = lambda v: left + pw * (float(v) - lo) / (hi - lo)
    body = [f"<line x1='{left}' y1='{top + ph}' x2='{left + pw}' y2='{top + ph}' stroke='#333'/>",
            f"<line x1='{left}' y1='{top}' x2='{left}' y2='{top + ph}' stroke='#333'/>",
            f"<text x='{left - 4}' y='{top + 10}' text-anchor='end'>{cmax}</text>",
            f"<text x='{left - 4}' y='{top + ph}' text-anchor='end'>0</text>",
            f"<text x='{left}' y='{top + ph + 14}' text-anchor='middle'>{_e(edges[0])}</text>",
            f"<text x='{left + pw}' y='{top + ph + 14}' text-anchor='middle'>{_e(edges[-1])}</text>"]
    for i, c in enumerate(counts):
        if c <= 0:
            continue
        x0, x1 = sx(edges[i]), sx(edges[i + 1])
        h = ph * c / cmax
        body.append(f"<rect x='{_n(x0 + 0.5)}' y='{_n(top + ph - h)}' width='{_n(max(x1 - x0 - 1, 1.0))}' "
                    f"height='{_n(h)}' fill='{OTHER}'><title>[{edges[i]}, {edges[i + 1]}): {c}</title></rect>")
    if threshold is not None and lo <= float(threshold) <= hi:
        x = sx(threshold)
        body.append(f"<line x1='{_n(x)}' y1='{top - 4}' x2='{_n(x)}' y2='{top + ph}' stroke='{REJ}' "
                    f"stroke-dasharray='4 3'/><text x='{_n(x + 3)}' y='{top + 6}' fill='{REJ}'>"
                    f"{_e(threshold_label)} {_e(threshold)}</text>")
    mean = hist.get("mean")
    foot = (f"n={hist.get('n', 0)}  below range={hist.get('underflow', 0)}  above range={hist.get('overflow', 0)}"
            + (f"  mean={mean}" if mean is not None else ""))
    body.append(f"<text x='{left}' y='{height - 10}' fill='#444'>{_e(foot)}</text>")
    return _svg(width, height, body, title)


# ----------------------------------------------------------------------------- the card's plots

def _stage_rows(card: dict) -> list[tuple[str, list[float]]]:
    return [(f"{s['stage']} ({s['unit']})", [s.get("ok", 0), s.get("rejected", 0)]) for s in card.get("stages", [])]


def _rejection_sections(card: dict) -> list[tuple[str | None, list[tuple[str, list[float]]]]]:
    rows = [(f"{st}: {kind}", [n]) for st, kinds in (card.get("rejections_by_stage") or {}).items()
            for kind, n in kinds.items() if n]
    sections: list[tuple[str | None, list]] = [("rejected items, by stage: reason", rows)]
    pairs = next((s for s in card.get("stages", []) if s["stage"] == "pairs"), {})
    filtered = [(k.split(":", 1)[1], [n]) for k, n in (pairs.get("totals") or {}).items()
                if k.startswith("filtered:") and n]
    filtered += [(k, [n]) for k, n in (pairs.get("totals") or {}).items()
                 if k in ("own_product_excluded", "not_selected") and n]
    if filtered:
        sections.append(("pair candidates left out by the pairs stage (counted, not listed)", filtered))
    return sections


def card_plots(card: dict, thresholds: dict | None = None) -> dict[str, tuple[str, str]]:
    """{file name: (caption, svg)} in display order."""
    out: dict[str, tuple[str, str]] = {}
    out["stages.svg"] = ("Survivors and rejects per stage",
                         hbar_svg("Survivors / rejected per stage", [(None, _stage_rows(card))],
                                  [("survivors", OK), ("rejected", REJ)]))
    out["rejections.svg"] = ("Rejection reasons",
                             hbar_svg("Rejections by reason", _rejection_sections(card), [("count", REJ)]))
    cats = card.get("categories") or {}
    sections = [(name, [(k, [v]) for k, v in (cats.get(key) or {}).items()])
                for name, key in (("source videos (ingested)", "videos"), ("products (usable)", "products"),
                                  ("triplets: category replaced (from)", "from"),
                                  ("triplets: new product category (to)", "to"), ("triplets: from -> to", "pairs"))
                if cats.get(key)]
    out["categories.svg"] = ("Category distribution", hbar_svg("Categories", sections, [("count", OTHER)]))
    for metric, hist in (card.get("score_histograms") or {}).items():
        level, key = THRESHOLD_KEYS.get(metric, (None, None))
        thr = ((thresholds or {}).get(level) or {}).get(key) if level else None
        label = ("min" if key and key.startswith("min") else "max") if thr is not None else ""
        out[f"hist_{metric}.svg"] = (f"{metric} ({level.upper() if level else ''}, every scored pair)",
                                     histogram_svg(f"{metric} ({(level or '').upper()} score, all scored pairs)",
                                                   hist, thr, label))
    return out


# ----------------------------------------------------------------------------- the page

def _table(columns: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def stage_table_rows(card: dict) -> list[list]:
    """[stage, unit, survivors, rejected, reasons] per stage (the eval report shows it too)."""
    rows = []
    for s in card.get("stages", []):
        reasons = ", ".join(f"{k} {n}" for k, n in s.get("rejects_by_reason", {}).items())
        rows.append([s["stage"], s["unit"], s.get("ok", 0), s.get("rejected", 0), reasons])
    return rows


def card_html(card: dict, plots: dict[str, tuple[str, str]]) -> str:
    c = card.get("counts", {})
    packed = c.get("packed", {})
    splits = [[sp, packed.get(sp, 0), (packed.get("videos") or {}).get(sp, 0)] for sp in ("train", "val", "benchmark")]
    figs = "".join(f"<figure>{svg}<figcaption>{_e(cap)} — <code>plots/{_e(name)}</code></figcaption></figure>"
                   for name, (cap, svg) in plots.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{_e(card.get('name', 'dataset'))}: dataset card</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:0.5em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}figure{{margin:1em 0}}</style></head>
<body><h1>{_e(card.get('name', 'dataset'))}: dataset card</h1>
<p>{_e(card.get('description', ''))}</p>
<p>Samples: {_e(packed.get('total', 0))} triplets in WebDataset shards; members {_e(', '.join(card.get('sample_members', [])))}.
Lineage of any triplet: <code>python -m pvtt data lineage &lt;id&gt; --index {_e(card.get('index', 'index.sqlite'))}</code>;
counts: <code>python -m pvtt data stats</code>.</p>
<h2>Splits (by source video)</h2>{_table(['split', 'triplets', 'videos'], splits)}
<h2>Stages: survivors and rejects</h2>{_table(['stage', 'unit', 'survivors', 'rejected', 'rejected by reason'], stage_table_rows(card))}
<h2>Plots</h2>{figs}
</body></html>
"""


def write_card_media(out_dir: str | Path, card: dict, thresholds: dict | None = None) -> dict:
    """Write plots/*.svg and card.html into ``out_dir``; return {"plots": [paths], "html": "card.html"}."""
    out_dir = Path(out_dir)
    plots = card_plots(card, thresholds)
    for name, (_, svg) in plots.items():
        write_text(out_dir / "plots" / name, svg)
    write_text(out_dir / "card.html", card_html(card, plots))
    return {"plots": [f"plots/{name}" for name in plots], "html": "card.html"}
