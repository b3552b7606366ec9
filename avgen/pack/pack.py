"""AVGen pack: every batch's shards into one dataset, with its card: the ``avgen_dataset`` milestone.

The shards were written per batch by the format stage; here they are gathered (hard-linked when
the file system allows, else copied) under ``shards/``, and the card totals what happened to
every manifest row: how many were ingested, kept by the filters, formatted; the pass rate; the
rejects per stage and reason (every reject row is in ``rejects.jsonl``); the split sizes; and the
thresholds and formats that produced it. ``card.json`` is the DVC metrics file,
``dataset_card.md`` the same for a reader.
"""
from __future__ import annotations

import logging
from pathlib import Path

from genbuild import stage as cli
from genbuild.io.atomic import atomic_path, link_or_copy, write_text
from genbuild.io.jsonio import read_json, read_jsonl, write_json, write_jsonl
from genbuild.manifest import write_manifest

log = logging.getLogger("avgen.pack.pack")

STAGE = "avgen_pack"
SUBSTAGES = (("raw", "avgen_ingest"), ("filter", "avgen_filter"), ("format", "avgen_format"))


def _totals(work: Path, batches: list[str]) -> tuple[dict, list[dict], dict]:
    """(counts, every reject row, rejects per stage and reason) over the batches."""
    counts = {"rows": 0, "ingested": 0, "kept": 0, "formatted": 0, "splits": {}}
    rows, by_stage = [], {}
    for b in batches:
        ing, fil, fmt = (read_json(work / d / b / "summary.json") for d, _ in SUBSTAGES)
        counts["rows"] += ing["rows"]
        counts["ingested"] += ing["ingested"]
        counts["kept"] += fil["kept"]
        counts["formatted"] += fmt["formatted"]
        for s, n in fmt["splits"].items():
            counts["splits"][s] = counts["splits"].get(s, 0) + n
        for d, stage in SUBSTAGES:
            for r in read_jsonl(work / d / b / "rejects.jsonl"):
                rows.append({**r, "batch": b})
                key = r["reason"].split(":")[0]
                by_stage.setdefault(stage, {})[key] = by_stage.setdefault(stage, {}).get(key, 0) + 1
    return counts, rows, {s: dict(sorted(v.items())) for s, v in sorted(by_stage.items())}


def _card_md(card: dict) -> str:
    c = card["counts"]
    lines = ["# AVGen dataset card", "",
             f"{c['rows']} manifest rows -> {c['ingested']} ingested -> {c['kept']} kept by the filters -> "
             f"{c['formatted']} formatted; pass rate {card['pass_rate']:.1%}.", "",
             "| split | samples |", "|---|---|", *[f"| {s} | {n} |" for s, n in sorted(c["splits"].items())], "",
             "## Rejects by stage and reason", "", "| stage | reason | clips |", "|---|---|---|"]
    lines += [f"| {s} | {r} | {n} |" for s, reasons in card["rejects"].items() for r, n in reasons.items()]
    fmt = card["format"]
    lines += ["", "## Format", "", f"{fmt['size']}x{fmt['size']} @ {fmt['fps']} fps, {fmt['sample_rate']} Hz mono, "
              f"{fmt['seconds']} s; log-mel {fmt['mel']['n_mels']} bins, n_fft {fmt['mel']['n_fft']}, hop "
              f"{fmt['mel']['hop']}, {fmt['mel']['fmin']:g}-{fmt['mel']['fmax']:g} Hz (log10, the vocoder's).", "",
              "## Filter thresholds", "", *[f"- `filter.{k}`: {v}" for k, v in sorted(card["filter"].items())], ""]
    return "\n".join(lines)


def run(work: str | Path, batches: list[str], out: str | Path, params: dict) -> dict:
    work = Path(work)
    counts, rejects, by_stage = _totals(work, batches)
    card = {"counts": counts, "pass_rate": round(counts["formatted"] / counts["rows"], 4) if counts["rows"] else 0.0,
            "rejects": by_stage, "filter": params["filter"], "format": params["format"],
            "samples_per_shard": params["pack"]["samples_per_shard"]}
    if not counts["splits"].get("train"):
        raise ValueError(f"{STAGE}: no clip reached the train split ({counts['rows']} rows, {counts['kept']} kept): "
                         "nothing to train on; see the rejects in the batches' rejects.jsonl")
    with atomic_path(out, directory=True) as tmp:
        (tmp / "shards").mkdir()
        shards = []
        for b in batches:
            for src in sorted((work / "format" / b / "shards").glob("*.tar")):
                link_or_copy(src, tmp / "shards" / src.name)
                shards.append(tmp / "shards" / src.name)
        write_jsonl(tmp / "rejects.jsonl", rejects)
        write_json(tmp / "card.json", card)
        write_text(tmp / "dataset_card.md", _card_md(card))
        write_manifest(tmp, STAGE, params, shards, {**counts, "shards": len(shards)})
    log.info("%s: %d rows -> %d samples in %d shards (pass rate %.1f%%); rejects %s", STAGE, counts["rows"],
             counts["formatted"], len(shards), 100 * card["pass_rate"], by_stage)
    return card


def main(argv: list[str] | None = None) -> None:
    cli.setup_logging()
    ap = cli.parser("Gather every batch's AVGen shards into the dataset, with its card.")
    ap.add_argument("--work", required=True, help="work/avgen (raw/, filter/, format/ per batch)")
    ap.add_argument("--batches", nargs="+", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    run(args.work, args.batches, args.out, args.params)
