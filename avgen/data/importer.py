"""Public audio-video set lists -> the AVGen ingest manifest (``id,source,caption,start,seconds``).

``python -m avgen.data.importer --format vggsound vggsound.csv --out data/avgen/manifest.csv``

- VGGSound (``vggsound.csv``, no header): ``youtube_id,start_seconds,label,split``; every clip
  is 10 s from ``start_seconds``; the caption is the label.
- AudioSet (``balanced_train_segments.csv`` etc.): comment lines starting with ``#``, then
  ``YTID, start_seconds, end_seconds, "mid1,mid2"``; the caption joins the display names of the
  MIDs from ``class_labels_indices.csv`` (``--labels``; without it the MIDs themselves).

Where a clip's bytes are is the site's business: ``importer.url_template`` (params) turns the ids
into a source, e.g. ``https://mirror.example/vggsound/{ytid}_{start:06d}.mp4`` (an http(s) mirror)
or ``clips/{ytid}_{start:06d}.mp4`` (a local dump, relative to the manifest). With
``importer.cut: true`` the source is a whole video and the manifest asks ingest to cut the
segment (``start``, ``seconds``); with ``false`` the source is already the clip. Rows are written
in input order; a row the format cannot parse is reported with its line number and skipped, and
the counts say how many.
"""
from __future__ import annotations

import argparse
import csv
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from genbuild.io.atomic import atomic_path
from genbuild.params import load

log = logging.getLogger("avgen.data.importer")

FORMATS = ("vggsound", "audioset")
VGGSOUND_SECONDS = 10.0
_ID = re.compile(r"[^A-Za-z0-9_-]")


def clip_id(ytid: str, start: float) -> str:
    """An id the build accepts (letters, digits, '_', '-'), unique per (video, segment)."""
    return f"{_ID.sub('_', ytid.lstrip('-') or 'x')}_{int(round(start * 1000)):09d}"


def parse_vggsound(lines: Iterator[list[str]]) -> Iterator[tuple[int, dict | str]]:
    for n, row in lines:
        if len(row) < 3:
            yield n, f"expected youtube_id,start_seconds,label[,split], got {len(row)} field(s)"
            continue
        try:
            start = float(row[1])
        except ValueError:
            yield n, f"start_seconds {row[1]!r} is not a number"
            continue
        yield n, {"ytid": row[0].strip(), "start": start, "seconds": VGGSOUND_SECONDS, "caption": row[2].strip()}


def parse_audioset(lines: Iterator[list[str]], names: dict[str, str]) -> Iterator[tuple[int, dict | str]]:
    for n, row in lines:
        if row and row[0].lstrip().startswith("#"):
            continue
        if len(row) < 4:
            yield n, f"expected YTID, start_seconds, end_seconds, \"labels\", got {len(row)} field(s)"
            continue
        try:
            start, end = float(row[1]), float(row[2])
        except ValueError:
            yield n, f"start/end {row[1]!r}/{row[2]!r} are not numbers"
            continue
        mids = [m.strip() for m in ",".join(row[3:]).strip().strip('"').split(",") if m.strip()]
        yield n, {"ytid": row[0].strip(), "start": start, "seconds": end - start,
                  "caption": ", ".join(names.get(m, m) for m in mids)}


def read_label_names(path: str | Path | None) -> dict[str, str]:
    """AudioSet's class_labels_indices.csv (index,mid,display_name) -> {mid: display name}."""
    if not path:
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {r["mid"]: r["display_name"] for r in csv.DictReader(f)}


def convert(src: str | Path, fmt: str, out: str | Path, cfg: dict, labels: str | Path | None = None) -> dict:
    """Write the ingest manifest; returns {"rows", "written", "skipped"}."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    template, cut = cfg["url_template"], bool(cfg.get("cut", False))
    counts = {"rows": 0, "written": 0, "skipped": 0}
    with open(src, newline="", encoding="utf-8") as f, atomic_path(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as o:
        reader = enumerate(csv.reader(f, skipinitialspace=True), start=1)
        rows = parse_vggsound(reader) if fmt == "vggsound" else parse_audioset(reader, read_label_names(labels))
        w = csv.writer(o, lineterminator="\n")
        w.writerow(["id", "source", "caption", "start", "seconds"])
        seen = set()
        for n, r in rows:
            counts["rows"] += 1
            if isinstance(r, str) or r["seconds"] <= 0 or clip_id(r["ytid"], r["start"]) in seen:
                why = r if isinstance(r, str) else "duplicate segment or non-positive length"
                log.warning("%s line %d: skipped: %s", src, n, why)
                counts["skipped"] += 1
                continue
            cid = clip_id(r["ytid"], r["start"])
            seen.add(cid)
            source = template.format(ytid=r["ytid"], start=int(r["start"]), end=int(r["start"] + r["seconds"]))
            w.writerow([cid, source, r["caption"], f"{r['start']:g}" if cut else "", f"{r['seconds']:g}" if cut else ""])
            counts["written"] += 1
    return counts


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(prog="python -m avgen.data.importer", description=__doc__.splitlines()[0])
    ap.add_argument("src", help="the public list (vggsound.csv, *_segments.csv)")
    ap.add_argument("--format", required=True, choices=FORMATS)
    ap.add_argument("--out", required=True, help="the ingest manifest to write (CSV)")
    ap.add_argument("--labels", help="AudioSet class_labels_indices.csv (MID -> display name for captions)")
    ap.add_argument("--params", default="params.yaml", help="params file holding avgen.importer (default params.yaml)")
    a = ap.parse_args(argv)
    cfg = load(a.params)["avgen"]["importer"]
    c = convert(a.src, a.format, a.out, cfg, a.labels)
    print(f"{a.out}: {c['written']} clips from {c['rows']} rows ({c['skipped']} skipped)", file=sys.stderr)


if __name__ == "__main__":
    main()
