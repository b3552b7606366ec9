"""The AVGen evaluation page: metrics with their implementations, and every benchmark clip's ground
truth beside each model's output as playable mp4s (sound muxed in). One self-contained HTML file
next to ``media/``; no timestamps, so the same results give the same bytes."""
from __future__ import annotations

import html
from pathlib import Path

from genbuild.io.atomic import write_text

CSS = ("body{font-family:sans-serif;margin:24px;max-width:1200px}table{border-collapse:collapse;margin:12px 0}"
       "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}video{width:256px}"
       ".na{color:#888}")
ROWS = ("av_align", "clip_score", "clap_score", "fvd", "fad", "seconds_per_sample")


def _e(s) -> str:
    return html.escape(str(s), quote=True)


def _cell(v) -> str:
    """A metric value; a dict is {value, available, reason|implementation}: unavailable shows its reason."""
    if isinstance(v, dict):
        if not v.get("available", v.get("value") is not None):
            return f"<span class='na'>unavailable: {_e(v.get('reason', ''))}</span>"
        return f"{v['value']}<br><small>{_e(v.get('implementation', ''))}</small>"
    return _e(v)


def _metrics_table(metrics: dict, models: list[str]) -> list[str]:
    out = ["<table><tr><th>metric</th>" + "".join(f"<th>{_e(m)}</th>" for m in models) + "</tr>"]
    for r in ROWS:
        out.append(f"<tr><td>{r}</td>" + "".join(f"<td>{_cell(metrics[m].get(r))}</td>" for m in models) + "</tr>")
    out.append("</table>")
    gt = metrics["ground_truth"]
    out.append("<p>AV-Align of the ground truth: " + ", ".join(f"{_e(k)} = {_e(v)}" for k, v in gt.items())
               + " (audio onsets vs optical-flow peaks, ±1 frame; shifting the audio must lower it).</p>")
    return out


def write_report(path: str | Path, metrics: dict, ids: list[str], captions: dict[str, str], models: list[str]) -> None:
    body = ["<h1>AVGen-DiT evaluation</h1>", f"<p>{metrics['items']} benchmark clips.</p>", "<h2>Metrics</h2>"]
    body += _metrics_table(metrics, models)
    body += ["<h2>Clips</h2>", "<table><tr><th>clip</th><th>ground truth</th>"
             + "".join(f"<th>{_e(m)}</th>" for m in models) + "</tr>"]
    for i in ids:
        vids = [f"<video controls preload='metadata' src='media/{_e(i)}_{k}.mp4'></video>" for k in ("truth", *models)]
        body.append(f"<tr><td>{_e(i)}<br><small>{_e(captions[i])}</small></td>" + "".join(f"<td>{v}</td>" for v in vids)
                    + "</tr>")
    body.append("</table>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>AVGen-DiT evaluation</title><style>{CSS}</style>"
            f"</head><body>{''.join(body)}</body></html>\n")
    write_text(path, page)
