"""Filter L3: human review of a deterministic sample of the kept pairs.

Among the pairs kept by L1/L2 (every ``scores.json`` given), ``filter.l3.review_fraction``
of them (``ceil(fraction * kept)``, at least 1 when any are kept) are sampled: the ones with
the smallest ``sha256(f"{seed}:{pair_id}")``. The stage writes

* ``sheet.html``: a self-contained review page, one row per sampled pair (frames of the
  source and the edited video as inline PNG strips, the reference image, caption, scores);
* ``verdicts_template.csv``: ``pair_id,verdict,notes`` with empty verdicts, to fill with
  ``accept``/``reject`` and commit at the verdicts path (params ``filter.l3.verdicts``);
* ``decisions.json``: what the verdicts file (when present) decided; pack drops ``rejected``;
* ``rejects.jsonl``: stage ``review``, one row per pair a human rejected.

The media are found by the build's layout: ``<work>/pairs/<shard>.json`` and
``<work>/synth/<shard>/<pair_id>/edited.mp4`` where ``<shard>`` is the filter directory's name.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import logging
import math
from pathlib import Path

import numpy as np
from PIL import Image

from genbuild import stage as cli
from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import read_json, write_json
from genbuild.io.rejects import Rejects
from genbuild.io.video import MediaError, read_frames, read_image

log = logging.getLogger("pvtt.filter.review")

STAGE = "review"
VERDICTS = ("accept", "reject")
THUMB_FRAMES = 4
THUMB_HEIGHT = 72
PALETTE_COLORS = 64


def _param(params: dict, key: str):
    try:
        return cli.get(params, key)
    except KeyError as e:
        raise ValueError(str(e.args[0])) from None


def read_params(params: dict) -> dict:
    seed = _param(params, "seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"params key 'seed' must be an integer, got {seed!r}")
    frac = _param(params, "filter.l3.review_fraction")
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 <= frac <= 1.0:
        raise ValueError(f"params key 'filter.l3.review_fraction' must be a number in [0, 1], got {frac!r}")
    verdicts = cli.get(params, "filter.l3.verdicts", None)
    if verdicts is not None and not isinstance(verdicts, str):
        raise ValueError(f"params key 'filter.l3.verdicts' must be a path string or null, got {verdicts!r}")
    return {"seed": seed, "review_fraction": float(frac), "verdicts": verdicts}


def rank_key(seed: int, pair_id: str) -> str:
    return hashlib.sha256(f"{seed}:{pair_id}".encode()).hexdigest()


def sample_for_review(kept_ids: list[str], seed: int, fraction: float) -> list[str]:
    """The sampled pair ids (sorted): the ceil(fraction*n) (>= 1 if n > 0) smallest sha256(seed:id)."""
    ids = sorted(set(kept_ids))
    if not ids:
        return []
    n = max(1, math.ceil(round(fraction * len(ids), 9)))
    return sorted(sorted(ids, key=lambda p: (rank_key(seed, p), p))[:n])


def load_kept(filter_dirs: list[str | Path]) -> dict[str, dict]:
    """pair_id -> {"shard": filter dir name, "scores": its scores.json entry} for kept pairs."""
    kept: dict[str, dict] = {}
    for d in sorted(Path(x) for x in filter_dirs):
        doc = read_json(d / "scores.json")
        for pid, s in sorted(doc.get("pairs", {}).items()):
            if s.get("kept"):
                if pid in kept:
                    raise ValueError(f"pair {pid} appears in two filter shards: {kept[pid]['shard']} and {d.name}")
                kept[pid] = {"shard": d.name, "scores": s}
    return kept


class VerdictsError(ValueError):
    """A verdicts CSV that cannot be used (not UTF-8, no pair_id/verdict header, a bad or contradicting
    row, a field over the csv module's size limit); the message names the file and the row or problem."""


def read_verdicts(path: str | Path) -> dict[str, dict]:
    """pair_id -> {"verdict": "accept"|"reject"|"", "notes", "row"}; a bad file or row raises VerdictsError naming it."""
    path = Path(path)
    out: dict[str, dict] = {}
    try:
        data = path.read_bytes()
    except OSError as e:
        raise VerdictsError(f"{path}: cannot read the verdicts CSV ({e.strerror or e})") from e
    try:  # UTF-8, with or without a BOM; anything else (a cp1252 "CSV" save) is refused, not guessed
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise VerdictsError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}: {e.reason}); "
                            "save the verdicts CSV as UTF-8 (e.g. Excel's 'CSV UTF-8'), then rerun") from None
    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f)
        try:
            _read_rows(reader, path, out)
        except csv.Error as e:  # a field over csv.field_size_limit(), e.g. from an unclosed quote
            raise VerdictsError(f"{path}: line {reader.reader.line_num}: {e} (an unclosed '\"' makes the rest of the "
                                "file one field)") from None
    return out


def _read_rows(reader: csv.DictReader, path: Path, out: dict[str, dict]) -> None:
    """Fill ``out`` from the rows of ``reader`` (read_verdicts' rules; rows are numbered as lines from 2)."""
    cols = [c.strip() for c in (reader.fieldnames or [])]
    if "pair_id" not in cols or "verdict" not in cols:
        raise VerdictsError(f"{path}: header must have pair_id and verdict columns, got {_cut(repr(cols))}")
    for line, row in enumerate(reader, start=2):
        # a row longer than the header puts its extra fields, a list, under the key None
        row = {(k or "").strip(): (v if isinstance(v, str) else "") for k, v in row.items()}
        pid = row.get("pair_id", "").strip()
        verdict = row.get("verdict", "").strip().lower()
        if not pid and not verdict:
            continue
        if not pid:
            raise VerdictsError(f"{path}: row {line}: empty pair_id")
        if verdict not in ("",) + VERDICTS:
            raise VerdictsError(f"{path}: row {line} (pair_id {_cut(pid)}): unknown verdict "
                                f"{_cut(repr(row.get('verdict')))} (expected accept, reject or empty)")
        if pid in out and out[pid]["verdict"] and verdict and out[pid]["verdict"] != verdict:
            raise VerdictsError(f"{path}: row {line} (pair_id {_cut(pid)}): verdict {verdict!r} contradicts "
                                f"row {out[pid]['row']} ({out[pid]['verdict']!r})")
        if pid not in out or verdict:
            out[pid] = {"verdict": verdict, "notes": row.get("notes", "").strip(), "row": line}


def _cut(text: str, limit: int = 120) -> str:
    """``text`` for a message, at most ``limit`` characters (a pasted paragraph in the wrong column)."""
    return text if len(text) <= limit else text[:limit] + "..."


def decide(kept: dict[str, dict], sampled: list[str], verdicts: dict[str, dict] | None,
           verdicts_file: str | None) -> dict:
    v = verdicts or {}
    rejected = sorted(p for p, r in v.items() if r["verdict"] == "reject" and p in kept)
    accepted = sorted(p for p, r in v.items() if r["verdict"] == "accept" and p in kept)
    pending = sorted(p for p in sampled if not v.get(p, {}).get("verdict"))
    unmatched = sorted(p for p, r in v.items() if p not in kept)
    return {"sampled": sampled, "verdicts_file": verdicts_file, "rejected": rejected, "accepted": accepted,
            "pending": pending, "unmatched": unmatched, "kept_before_review": len(kept)}


# --------------------------------------------------------------------------------------- sheet

def _png_b64(arr: np.ndarray, palette: bool = True) -> str:
    """Base64 PNG; thumbnails are reduced to a 64-colour adaptive palette (no dither) to keep the sheet small."""
    im = Image.fromarray(np.asarray(arr, dtype=np.uint8))
    if palette:
        im = im.quantize(colors=PALETTE_COLORS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _resize(frame: np.ndarray, height: int) -> np.ndarray:
    h, w = frame.shape[:2]
    width = max(1, round(w * height / h))
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))


def _strip(frames: np.ndarray, idx: list[int]) -> np.ndarray:
    tiles = [_resize(frames[i], THUMB_HEIGHT) for i in idx]
    gap = np.full((THUMB_HEIGHT, 2, 3), 255, np.uint8)
    out = []
    for t in tiles:
        out += [t, gap]
    return np.concatenate(out[:-1], axis=1)


def _frame_idx(n: int) -> list[int]:
    k = min(THUMB_FRAMES, n)
    return sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)})


def _reference_thumb(path: Path) -> np.ndarray:
    rgba = read_image(path, mode="RGBA").astype(np.float64)
    h, w = rgba.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    checker = np.where(((yy // 8 + xx // 8) % 2)[..., None] == 0, 230.0, 190.0)
    a = rgba[..., 3:4] / 255.0
    rgb = (rgba[..., :3] * a + checker * (1 - a)).round().astype(np.uint8)
    return _resize(rgb, 96)


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _media_cells(work: Path, shard: str, pid: str, pair: dict | None) -> tuple[str, str]:
    if pair is None:
        return "<i>pair metadata not found</i>", "<i>-</i>"
    try:
        src = read_frames(work / pair["clip_path"])
        edt = read_frames(work / "synth" / shard / pid / "edited.mp4")
        idx = _frame_idx(min(len(src), len(edt)))
        frames = (f"<div>source</div>{_img(_png_b64(_strip(src, idx)), 'source frames')}"
                  f"<div>edited</div>{_img(_png_b64(_strip(edt, idx)), 'edited frames')}"
                  f"<div class=small>frames {', '.join(map(str, idx))} of {len(src)}</div>")
    except (MediaError, KeyError) as e:
        frames = f"<i>cannot show video: {html.escape(str(e))}</i>"
    try:
        ref = _img(_png_b64(_reference_thumb(work / pair["reference_path"])), "reference")
    except (MediaError, KeyError) as e:
        ref = f"<i>cannot show reference: {html.escape(str(e))}</i>"
    return frames, ref


def _scores_cell(s: dict) -> str:
    """L1/L2 numbers (learned L2 scores too, when present) and the L3 VLM score with its answer."""
    first = ("bg_ssim", "presence", "warp_error", "sharpness_ratio")
    lines = [f"{html.escape(str(k))} {html.escape(str(v))}" for level in ("l1", "l2")
             for k, v in sorted((s.get(level) or {}).items(),
                                key=lambda kv: (first.index(kv[0]) if kv[0] in first else len(first), kv[0]))
             if k != "pass"]
    l3 = s.get("l3")
    if l3:
        score = l3.get("vlm_score")
        lines.append(f"<b>vlm_score {html.escape(str(score if score is not None else 'none'))}</b>")
        if l3.get("vlm_answer") is not None:
            lines.append(f"vlm answer: <q>{html.escape(str(l3['vlm_answer']))}</q>")
    return "<br>".join(lines)


def render_sheet(work: Path, sampled: list[str], kept: dict[str, dict], pairs_meta: dict[str, dict],
                 verdicts_path: str | None, seed: int, fraction: float) -> str:
    rows = []
    for i, pid in enumerate(sampled):
        info, pair = kept[pid], pairs_meta.get(pid)
        frames, ref = _media_cells(work, info["shard"], pid, pair)
        scores = _scores_cell(info["scores"])
        caption = pair.get("caption") if pair else None
        caption = html.escape("" if caption is None else str(caption))  # pairs JSON: a number or null shows as text
        cats = (f"{html.escape(str(pair.get('category_from')))} &rarr; {html.escape(str(pair.get('category_to')))}"
                if pair else "")
        rows.append(f"<tr><td>{i + 1}</td><td><code>{html.escape(pid)}</code><br><span class=small>"
                    f"{html.escape(info['shard'])}<br>{cats}</span></td><td>{frames}</td><td>{ref}</td>"
                    f"<td>{caption}</td><td class=small>{scores}</td></tr>")
    target = html.escape(verdicts_path or "review/verdicts.csv")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>PVTT L3 review sheet</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #bbb; padding: 4px 6px; vertical-align: top; }}
th {{ background: #eee; }}
.small {{ font-size: 80%; color: #444; }}
img {{ image-rendering: pixelated; display: block; }}
</style></head><body>
<h1>PVTT L3 human review</h1>
<p>{len(sampled)} of {len(kept)} pairs kept by L1/L2 sampled (review_fraction {fraction:g}, seed {seed}).</p>
<h2>How to give verdicts</h2>
<ol>
<li>Copy <code>verdicts_template.csv</code> (next to this page) to <code>{target}</code>, or append its rows
to that file when it already holds earlier verdicts (one row per pair_id).</li>
<li>For each pair below fill the <code>verdict</code> column with <b>accept</b> or <b>reject</b>
(reject when the edited video shows a wrong, distorted, flickering or badly placed product, a changed
background, or a caption that does not match); leave it empty to keep the pair pending. <code>notes</code> is free text.</li>
<li>Commit the file and rebuild the dataset (<code>snakemake</code> or <code>dvc repro</code>): rejected pairs are
dropped from the shards; any other verdict value stops the build with the row named.</li>
</ol>
<table>
<tr><th>#</th><th>pair</th><th>source (top) / edited (bottom)</th><th>reference</th><th>caption</th><th>scores</th></tr>
{chr(10).join(rows)}
</table>
</body></html>
"""


def _pairs_meta(work: Path, shards: set[str]) -> dict[str, dict]:
    meta: dict[str, dict] = {}
    for shard in sorted(shards):
        p = work / "pairs" / f"{shard}.json"
        if p.exists():
            for pair in read_json(p).get("pairs", []):
                meta[pair["id"]] = pair
        else:
            log.warning("%s: not found; sheet rows of shard %s lack media", p, shard)
    return meta


def run(params: dict, work: str | Path, filter_dirs: list[str | Path], out: str | Path,
        verdicts: str | None = None) -> dict:
    p = read_params(params)
    work = Path(work)
    verdicts = verdicts if verdicts is not None else p["verdicts"]
    kept = load_kept(filter_dirs)
    sampled = sample_for_review(list(kept), p["seed"], p["review_fraction"])
    log.info("%d kept pairs, %d sampled for review", len(kept), len(sampled))
    table = None
    verdicts_file = None
    if verdicts and Path(verdicts).exists():
        table = read_verdicts(verdicts)
        verdicts_file = str(verdicts)
        log.info("read %d verdict rows from %s", len(table), verdicts)
    elif verdicts:
        log.info("no verdicts file at %s yet: all sampled pairs pending", verdicts)
    decisions = decide(kept, sampled, table, verdicts_file)
    for pid in decisions["unmatched"]:
        log.warning("verdict for %s ignored: not among the kept pairs", pid)
    rejects = Rejects(STAGE)
    for pid in decisions["rejected"]:
        rejects.add(pid, "l3: human verdict reject", shard=kept[pid]["shard"], notes=table[pid]["notes"],
                    verdicts_file=verdicts_file)
    meta = _pairs_meta(work, {kept[pid]["shard"] for pid in sampled})
    sheet = render_sheet(work, sampled, kept, meta, verdicts, p["seed"], p["review_fraction"])
    with atomic_path(out, directory=True) as tmp:
        (tmp / "sheet.html").write_text(sheet, encoding="utf-8")
        with open(tmp / "verdicts_template.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["pair_id", "verdict", "notes"])
            for pid in sampled:
                w.writerow([pid, "", ""])
        write_json(tmp / "decisions.json", decisions)
        rejects.write(tmp / "rejects.jsonl")
    log.info("decisions: %d rejected, %d accepted, %d pending", len(decisions["rejected"]),
             len(decisions["accepted"]), len(decisions["pending"]))
    return decisions


def main(argv: list[str] | None = None) -> None:
    cli.setup_logging()
    ap = cli.parser("Filter L3: sample kept pairs for human review, write the sheet, apply committed verdicts.")
    ap.add_argument("--work", required=True, help="work directory")
    ap.add_argument("--filter", nargs="+", required=True, help="filter shard directories (with scores.json)")
    ap.add_argument("--verdicts", default=None, help="committed verdicts CSV (may not exist yet); "
                                                    "default: params filter.l3.verdicts")
    ap.add_argument("--out", required=True, help="output directory (work/review)")
    a = ap.parse_args(argv)
    run(a.params, a.work, a.filter, a.out, a.verdicts)


if __name__ == "__main__":
    main()
