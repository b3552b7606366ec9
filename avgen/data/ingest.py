"""AVGen ingest: one batch of manifest rows -> local clip files, or rejects naming the row.

The manifest is a CSV with the columns ``id,source,caption`` and optionally ``start,seconds``
(a segment of a longer source, as VGGSound and AudioSet list them; ``avgen.data.importer`` writes
such manifests). Batch ``bNNNN`` holds rows ``N*k .. N*k+k-1`` in file order, ``k`` =
``data.clips_per_job`` (``genbuild.batching``). A source is a local path under the data root or an
``http(s)`` URL, through the kit's source policy (``genbuild.sources``: downloads bounded and
resumable, other schemes refused). A segment is cut with ``-c copy`` (no re-encode: the format
stage re-encodes anyway; the cut starts at the key frame before ``start``).

Nothing here decides quality: the filter stage measures. A row that cannot become a readable
local file (bad id, refused source, download failure, a file ffprobe cannot read) is a reject;
the batch goes on. Output: ``<id>.mp4`` per accepted clip, ``items.jsonl`` (id, caption, file,
sha256), ``rejects.jsonl`` and ``summary.json``.
"""
from __future__ import annotations

import csv
import logging
import math
import re
import shutil
from pathlib import Path

from genbuild import batching
from genbuild import stage as cli
from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import write_json, write_jsonl
from genbuild.io.rejects import Rejects
from genbuild.io.video import BITEXACT, MediaError, ffmpeg_bin, ffmpeg_url, input_args, run_tool
from genbuild.manifest import sha256_file
from genbuild.sources import SourceError, obtain_source

log = logging.getLogger("avgen.data.ingest")

STAGE = "avgen_ingest"
COLUMNS = ("id", "source", "caption")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
DEFAULTS = {"retries": 3, "backoff_seconds": 1.0, "timeout_seconds": 60.0, "download_dir": "work/downloads",
            "data_root": None, "keep_downloads": False, "max_backoff_seconds": 60.0,
            "max_download_bytes": 2 * 2**30, "download_deadline_seconds": 3600.0, "stale_part_hours": 72.0}


def ingest_config(params: dict) -> dict:
    return {**DEFAULTS, **(params.get("ingest") or {})}


def batch_rows(manifest: str | Path, bid: str, per_job: int) -> list[tuple[int, dict]]:
    """(row number, row) of batch ``bid``: streamed, so a 19.5M-row manifest is never held in memory."""
    first = batching.batch_index(bid) * per_job
    out = []
    with open(manifest, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{manifest}: the ingest manifest lacks the column(s) {', '.join(missing)} "
                             f"(header: {reader.fieldnames})")
        for i, row in enumerate(reader):
            if i >= first + per_job:
                break
            if i >= first:
                out.append((i + 2, row))  # +2: the header is line 1
    return out


def _segment(row: dict, where: str) -> tuple[float, float] | None:
    """The row's (start, seconds), or None for the whole file; malformed numbers are the row's reject."""
    start, secs = (row.get("start") or "").strip(), (row.get("seconds") or "").strip()
    if not start and not secs:
        return None
    try:
        s, d = float(start or 0.0), float(secs)
    except ValueError:
        raise ValueError(f"{where}: start {start!r} / seconds {secs!r} are not numbers") from None
    if not (math.isfinite(s) and math.isfinite(d) and s >= 0 and d > 0):
        raise ValueError(f"{where}: start {s} must be >= 0 and seconds {d} > 0")
    return s, d


def _cut(src: Path, dst: Path, segment: tuple[float, float] | None) -> None:
    """Copy the file, or cut its segment without re-encoding, atomically."""
    with atomic_path(dst) as tmp:
        if segment is None:
            shutil.copyfile(src, tmp)
            return
        start, secs = segment
        cmd = [ffmpeg_bin(), "-nostdin", "-v", "error", "-y", "-ss", f"{start:.3f}", *input_args(src), "-t", f"{secs:.3f}",
               "-map", "0:v:0", "-map", "0:a:0?", "-c", "copy", *BITEXACT, "-f", "mp4", ffmpeg_url(tmp)]
        res = run_tool(cmd, src, "cut", "stream")
        if res.returncode != 0:
            raise MediaError(f"{src}: cutting {start:g}+{secs:g} s failed ({res.stderr.decode(errors='replace')[-300:]})")


def ingest_row(line: int, row: dict, manifest: Path, cfg: dict, out: Path, rejects: Rejects) -> dict | None:
    """One manifest row -> an item dict, or None after recording the reject (and removing a partial file)."""
    from avgen.data.probe import probe_av

    cid = (row.get("id") or "").strip()
    where = f"{manifest.name} line {line} (id {cid!r})"
    if not ID_RE.match(cid):
        rejects.add(cid or f"line{line}", f"bad id: {where}: an id names files; letters, digits, '.', '_', '-'")
        return None
    try:
        segment = _segment(row, where)
        src, fetched = obtain_source((row.get("source") or "").strip(), manifest, cfg, f"clip {cid!r}")
        try:
            dst = out / f"{cid}.mp4"
            _cut(Path(src), dst, segment)
            probe_av(dst)  # readable by ffprobe, with a video stream (quality is the filter's to judge)
        finally:
            if fetched is not None:
                fetched.release(remove=not cfg["keep_downloads"])
    except SourceError as e:
        rejects.add(cid, f"{e.kind}: {e}")
        return None
    except (MediaError, ValueError, OSError) as e:
        (out / f"{cid}.mp4").unlink(missing_ok=True)
        rejects.add(cid, f"unreadable: {e}")
        return None
    return {"id": cid, "caption": (row.get("caption") or "").strip(), "file": dst.name, "sha256": sha256_file(dst),
            "source": row.get("source")}


def run(manifest: str | Path, bid: str, out: str | Path, params: dict) -> dict:
    per_job = int(params["data"]["clips_per_job"])
    cfg = ingest_config(params)
    manifest = Path(manifest)
    rows = batch_rows(manifest, bid, per_job)
    rejects, items, seen = Rejects(STAGE), [], set()
    with atomic_path(out, directory=True) as tmp:
        for line, row in rows:
            cid = (row.get("id") or "").strip()
            if cid in seen:
                rejects.add(cid, f"duplicate id: {manifest.name} line {line} repeats id {cid!r}")
                continue
            seen.add(cid)
            item = ingest_row(line, row, manifest, cfg, tmp, rejects)
            if item:
                items.append(item)
            log.info("%s %s: %d/%d rows, %d kept", STAGE, bid, len(seen), len(rows), len(items))
        write_jsonl(tmp / "items.jsonl", items)
        rejects.write(tmp / "rejects.jsonl")
        summary = {"batch": bid, "rows": len(rows), "ingested": len(items), "rejected": len(rejects),
                   "rejects_by_reason": rejects.by_reason()}
        write_json(tmp / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    cli.setup_logging()
    ap = cli.parser("Ingest one batch of AVGen manifest rows (local files or URLs) into work/avgen/raw/<batch>.")
    ap.add_argument("--manifest", required=True, help="the ingest manifest CSV (id,source,caption[,start,seconds])")
    ap.add_argument("--batch", required=True, help="batch id, e.g. b0000")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    s = run(args.manifest, args.batch, args.out, args.params)
    log.info("%s %s: %d rows, %d ingested, %d rejected %s", STAGE, args.batch, s["rows"], s["ingested"], s["rejected"],
             s["rejects_by_reason"])
