"""AVGen format, one batch: kept clips -> the model's data, in WebDataset shards.

Each kept clip becomes a square ``format.size`` video at ``format.fps`` (scaled so the short side
fits, centre-cropped), mono audio at ``format.sample_rate``, exactly ``format.seconds`` long, and
its 80-bin log-mel spectrogram with the vocoder's parameters (``avgen.data.mel``: n_fft 1024,
hop 256, 80-7600 Hz, log10), all from ``avgen.data.standardise``. The batch's clips are split
(``avgen.pack.format.assign_splits``) and written ``pack.samples_per_shard`` per shard
(``<split>-<batch>-<nnn>.tar``, reproducible tars). A clip that fails here is a reject.
"""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from genbuild import stage as cli
from genbuild.data.shards import write_tar
from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import read_jsonl, write_json
from genbuild.io.rejects import Rejects
from genbuild.io.video import MediaError, write_video

log = logging.getLogger("avgen.data.format")

STAGE = "avgen_format"


def _members(item: dict, bid: str, split: str, fmt: dict, enc: dict, scratch: Path) -> list[tuple[str, bytes]]:
    """The shard members of one clip (its key is the clip id)."""
    import numpy as np

    from avgen.data.standardise import standardise
    from avgen.pack.format import npy_bytes, wav_bytes

    frames, audio, mel = standardise(scratch.parent / "raw" / item["file"], fmt)
    tmp = scratch / f"{item['id']}.mp4"
    write_video(tmp, frames, fmt["fps"], crf=enc["crf"], preset=enc["preset"], threads=enc["threads"])
    meta = {"id": item["id"], "batch": bid, "split": split, "fps": fmt["fps"], "sample_rate": fmt["sample_rate"],
            "seconds": fmt["seconds"], "size": fmt["size"], "measured": item["measured"]}
    key = item["id"].replace(".", "_")  # a dot would split the WebDataset key
    return [(f"{key}.mp4", tmp.read_bytes()), (f"{key}.wav", wav_bytes(audio, fmt["sample_rate"])),
            (f"{key}.mel.npy", npy_bytes(mel.astype(np.float16))), (f"{key}.txt", item["caption"].encode("utf-8")),
            (f"{key}.json", json.dumps(meta, sort_keys=True).encode("utf-8"))]


def run(raw: str | Path, filt: str | Path, bid: str, out: str | Path, params: dict) -> dict:
    from avgen.pack.format import SPLITS, assign_splits, shard_name

    fmt, pack, enc = params["format"], params["pack"], params["video"]
    kept = read_jsonl(Path(filt) / "kept.jsonl")
    splits = assign_splits([k["id"] for k in kept], int(params["seed"]), pack["val_fraction"], pack["benchmark_fraction"])
    rejects, per_split = Rejects(STAGE), {s: [] for s in SPLITS}
    with tempfile.TemporaryDirectory(prefix="avgen_format_") as td:
        scratch = Path(td) / "enc"
        scratch.mkdir()
        (Path(td) / "raw").symlink_to(Path(raw).resolve())
        for i, item in enumerate(sorted(kept, key=lambda k: k["id"])):
            try:
                per_split[splits[item["id"]]].append(_members(item, bid, splits[item["id"]], fmt, enc, scratch))
            except (MediaError, ValueError, OSError) as e:
                rejects.add(item["id"], f"format failed: {e}")
            log.info("%s %s: %d/%d clips formatted", STAGE, bid, i + 1, len(kept))
    k = int(pack["samples_per_shard"])
    with atomic_path(out, directory=True) as tmp:
        (tmp / "shards").mkdir()
        counts = {}
        for split, samples in per_split.items():
            counts[split] = len(samples)
            for j in range(0, len(samples), k):
                write_tar(tmp / "shards" / shard_name(split, bid, j // k), [m for s in samples[j:j + k] for m in s])
        rejects.write(tmp / "rejects.jsonl")
        summary = {"batch": bid, "kept": len(kept), "formatted": sum(counts.values()), "splits": counts,
                   "rejected": len(rejects), "rejects_by_reason": rejects.by_reason()}
        write_json(tmp / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    cli.setup_logging()
    ap = cli.parser("Standardise one batch of kept AVGen clips (size, fps, sample rate, log-mel) into shards.")
    ap.add_argument("--raw", required=True, help="the ingested batch, work/avgen/raw/<batch>")
    ap.add_argument("--filter", required=True, help="the batch's verdicts, work/avgen/filter/<batch>")
    ap.add_argument("--batch", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    s = run(args.raw, args.filter, args.batch, args.out, args.params)
    log.info("%s %s: %d kept -> %s", STAGE, args.batch, s["kept"], s["splits"])
