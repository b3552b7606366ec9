"""AVGen features index: every batch's per-shard features in one artifact, the ``avgen_features`` milestone.

The per-batch shard directories (.npy arrays, ``avgen.train.data``) are gathered under ``shards/`` (hard links where possible) beside
``features.json``: the encoders and the VAE that made them (what the samplers and evaluation
must decode latents with) and the shapes a model of this data takes. Training reads only this.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from genbuild import stage as cli
from genbuild.io.atomic import atomic_path, link_or_copy
from genbuild.io.jsonio import read_json, read_jsonl, write_json, write_jsonl
from genbuild.manifest import write_manifest

log = logging.getLogger("avgen.features.index")

STAGE = "avgen_features_index"


def _gather(batches: list[Path], dst: Path) -> tuple[list[Path], list[dict]]:
    """Every batch's shard directories under ``dst`` (files hard-linked where possible); their files, the rejects."""
    files, rejects = [], []
    for b in batches:
        for shard in sorted(p for p in b.iterdir() if p.is_dir()):
            (dst / shard.name).mkdir()
            for f in sorted(shard.iterdir()):
                link_or_copy(f, dst / shard.name / f.name)
                files.append(dst / shard.name / f.name)
        rejects += read_jsonl(b / "rejects.jsonl")
    return files, rejects


def run(batches: list[str | Path], out: str | Path, params: dict) -> dict:
    batches = [Path(b) for b in batches]
    with atomic_path(out, directory=True) as tmp:
        (tmp / "shards").mkdir()
        files, rejects = _gather(batches, tmp / "shards")
        if not files:
            raise ValueError(f"{STAGE}: no features in {len(batches)} batches (every sample rejected?)")
        files = [f for f in files if f.suffix == ".npy" or f.name == "meta.json"]
        first = files[0].parent
        z = {a: np.load(first / f"{a}.npy", mmap_mode="r") for a in ("latents", "mel", "clip_text", "clap_text")}
        shapes = {"video": list(z["latents"].shape[1:]), "audio": list(z["mel"].shape[1:]),
                  "clip_dim": int(z["clip_text"].shape[1]), "clap_dim": int(z["clap_text"].shape[1])}
        counts = {"samples": sum(read_json(b / "summary.json")["samples"] for b in batches), "shards": len(files)}
        info = {"features": params["features"], "format": params["format"], "shapes": shapes, "counts": counts}
        write_json(tmp / "features.json", info)
        write_jsonl(tmp / "rejects.jsonl", rejects)
        write_manifest(tmp, STAGE, params, files, counts)
    log.info("%s: %d samples in %d shards; shapes %s", STAGE, counts["samples"], counts["shards"], shapes)
    return info


def main(argv: list[str] | None = None) -> None:
    cli.setup_logging()
    ap = cli.parser("Gather every batch's AVGen features into the features artifact.")
    ap.add_argument("--batches", nargs="+", required=True, help="work/avgen/features/<batch> directories")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    run(args.batches, args.out, args.params)
