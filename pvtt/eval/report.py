"""The evaluation report: one self-contained HTML page with metrics and side-by-side animations.

Animations are GIFs (``genbuild.media``) stored beside the page under media/, one per benchmark
item, with columns template | product | ground truth | teacher | students.
"""
from __future__ import annotations

import html
import os

from genbuild.io.atomic import write_text


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


def dataset_section(card: dict, plots: list[tuple[str, str]], card_href: str = "../dataset/card.html") -> str:
    """The "Dataset" section: splits, every stage's survivors and rejects, and the card's plots
    (``plots``: [(path in the dataset, SVG text)], inlined so the page stays self-contained)."""
    packed = (card.get("counts") or {}).get("packed") or {}
    splits = [[sp, packed.get(sp, 0), (packed.get("videos") or {}).get(sp, 0)] for sp in ("train", "val", "benchmark")]
    stages = [[s["stage"], s["unit"], s.get("ok", 0), s.get("rejected", 0),
               ", ".join(f"{k} {n}" for k, n in (s.get("rejects_by_reason") or {}).items())]
              for s in card.get("stages", [])]
    figs = "".join(f"<figure>{svg}<figcaption><code>{html.escape(path)}</code></figcaption></figure>"
                   for path, svg in plots)
    return (f"<p>{html.escape(str(packed.get('total', 0)))} triplets. The full card: "
            f"<a href='{html.escape(card_href)}'>dataset/card.html</a>; every triplet's lineage: "
            "<code>python -m pvtt data lineage &lt;id&gt;</code>.</p>"
            + table_html(["split", "triplets", "videos"], splits)
            + (table_html(["stage", "unit", "survivors", "rejected", "rejected by reason"], stages) if stages else "")
            + figs)


def render(out_html: str | os.PathLike, title: str, metrics: dict, items: list[dict], notes: list[str],
           tables: list[tuple[str, list[str], list[list]]] = (), sections: list[tuple[str, str]] = ()) -> None:
    """metrics: {"models": {name: {metric: value}}}; items: [{"key", "caption", "gif" (relative path)}];
    tables: further (heading, columns, rows) sections after the models' table; sections: (heading, HTML)
    at the end of the page (e.g. :func:`dataset_section`)."""
    models = metrics["models"]
    cols = sorted({k for m in models.values() for k in m})
    table = table_html(["model"] + cols, [[name] + [m.get(c, "") for c in cols] for name, m in models.items()])
    table += "".join(f"<h2>{html.escape(h)}</h2>" + table_html(c, r) for h, c, r in tables)
    gallery = "".join(
        f"<figure><img src='{html.escape(it['gif'])}' alt='{html.escape(it['key'])}'>"
        f"<figcaption><code>{html.escape(it['key'])}</code> — {html.escape(it['caption'])}</figcaption></figure>"
        for it in items)
    note_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    extra = "".join(f"<h2>{html.escape(h)}</h2>{body}" for h, body in sections)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
figure{{margin:1em 0}}img{{image-rendering:pixelated;border:1px solid #ddd}}</style></head>
<body><h1>{html.escape(title)}</h1>
<h2>Metrics (benchmark split)</h2>{table}
<ul>{note_html}</ul>
<h2>Side by side: template | product | ground truth | teacher | students</h2>{gallery}
{extra}
</body></html>
"""
    write_text(out_html, page)
