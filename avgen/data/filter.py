"""AVGen quality filters, one batch: every ingested clip probed and measured, kept or rejected.

The measurements and thresholds are ``avgen.data.quality`` (video: fps, 480p-1080p, variance of
the Laplacian, cuts per second; audio: sample rate, SNR, silence, clipping; a clip without
audio). A clip that fails any threshold is a reject whose reason starts with the failed check's
key (``low_snr: 3.1 dB < filter.min_snr_db 10``); all its reasons are in the row. Every clip's
measurements go to ``verdicts.jsonl`` (kept ones too: stage 3 ranks them for its high-quality
subset), the kept ids to ``kept.jsonl``.
"""
from __future__ import annotations

import logging
from pathlib import Path

from genbuild import stage as cli
from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import read_jsonl, write_json, write_jsonl
from genbuild.io.rejects import Rejects

log = logging.getLogger("avgen.data.filter")

STAGE = "avgen_filter"


def run(raw: str | Path, out: str | Path, params: dict) -> dict:
    from avgen.data.quality import judge, validate_filter_params

    filt = params["filter"]
    validate_filter_params(filt)
    raw = Path(raw)
    items = read_jsonl(raw / "items.jsonl")
    rejects, verdicts, kept = Rejects(STAGE), [], []
    for i, item in enumerate(items):
        try:
            measured, reasons = judge(raw / item["file"], filt)
        except (ValueError, OSError) as e:  # unreadable despite ingest (e.g. a stream ffprobe lists but cannot decode)
            measured, reasons = {}, [f"unreadable: {e}"]
        verdicts.append({"id": item["id"], "kept": not reasons, "reasons": reasons, "measured": measured})
        if reasons:
            rejects.add(item["id"], reasons[0], reasons=reasons)
        else:
            kept.append({"id": item["id"], "caption": item["caption"], "file": item["file"], "measured": measured})
        log.info("%s: %d/%d clips measured, %d kept", STAGE, i + 1, len(items), len(kept))
    with atomic_path(out, directory=True) as tmp:
        write_jsonl(tmp / "verdicts.jsonl", verdicts)
        write_jsonl(tmp / "kept.jsonl", kept)
        rejects.write(tmp / "rejects.jsonl")
        summary = {"clips": len(items), "kept": len(kept), "rejected": len(rejects), "rejects_by_reason": rejects.by_reason()}
        write_json(tmp / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    cli.setup_logging()
    ap = cli.parser("Measure and filter one batch of ingested AVGen clips.")
    ap.add_argument("--raw", required=True, help="the ingested batch, work/avgen/raw/<batch>")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    s = run(args.raw, args.out, args.params)
    log.info("%s: %d clips, %d kept, rejects %s", STAGE, s["clips"], s["kept"], s["rejects_by_reason"])
