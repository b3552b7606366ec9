"""AVGen features, one batch: each of its shards -> a directory of .npy arrays that training reads.

Per sample: the CLIP embedding of its frames (mean of the per-frame embeddings) and of its
caption, the CLAP embedding of its audio and of its caption (``avgen.features.encoders``: open_clip
and the CLAP checkpoints from local weights at scale, frozen seeded stand-ins of the same shapes
on the sample), its video latents from the frozen SD-VAE (``avgen.features.frozen``), its log-mel
and the filter's measurements (stage 3 ranks by them). Computing these once per shard keeps the
encoders and the VAE out of the training loop. A sample that fails is a reject; the rest go on.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from genbuild import stage as cli
from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import write_json
from genbuild.io.rejects import Rejects
from genbuild.io.video import MediaError, read_frames_bytes

log = logging.getLogger("avgen.features.features")

STAGE = "avgen_features"
MEASURES = ("snr_db", "sharpness")


def _encode_sample(s: dict, clip, clap, vae) -> dict:
    import torch

    from avgen.models.frozen import encode_frames

    frames = read_frames_bytes(s["mp4"])
    with torch.no_grad():
        lat = encode_frames(vae, frames)
        row = {"clip_frames": clip.image(frames).mean(0), "clip_text": clip.text([s["caption"]])[0],
               "clap_audio": clap.audio([s["audio"]], s["sample_rate"])[0], "clap_text": clap.text([s["caption"]])[0]}
    out = {k: v.float().cpu().numpy() if hasattr(v, "cpu") else np.asarray(v, np.float32) for k, v in row.items()}
    out["latents"] = lat.float().cpu().numpy() if hasattr(lat, "cpu") else np.asarray(lat, np.float32)
    out["mel"] = s["mel"].astype(np.float32)
    out.update({m: np.float32(s["meta"]["measured"].get(m, np.nan)) for m in MEASURES})
    return out


def shard_features(shard: Path, clip, clap, vae, rejects: Rejects) -> dict | None:
    """The stacked features of one shard's samples, plus ids and captions; None when none survived."""
    from avgen.pack.format import iter_samples

    rows, ids, captions = [], [], []
    for s in iter_samples(shard):
        try:
            rows.append(_encode_sample(s, clip, clap, vae))
        except (MediaError, ValueError, RuntimeError) as e:
            rejects.add(s["meta"]["id"], f"features failed: {e}")
            continue
        ids.append(s["meta"]["id"])
        captions.append(s["caption"])
    if not rows:
        return None
    out = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    for k in ("latents", "mel"):  # the bulk of the bytes; float16 keeps a VAE latent's and a log-mel's precision
        out[k] = out[k].astype(np.float16)
    return {"arrays": out, "ids": ids, "captions": captions}


def run(dataset: str | Path, bid: str, out: str | Path, params: dict, threads: int = 1) -> dict:
    import torch

    from avgen.features.encoders import build_encoders
    from avgen.features.frozen import build_vae
    from avgen.pack.format import batch_shards
    from avgen.train.data import write_shard

    torch.set_num_threads(max(1, threads))
    feats = params["features"]
    device = feats.get("device", "cpu")  # the encoders and the VAE; the arrays come back to the CPU
    clip, clap = build_encoders(feats, Path("."), allow_stand_in=True, device=device)  # at scale: refused at start-up
    vae = build_vae(feats).to(device)
    rejects, counts = Rejects(STAGE), {}
    with atomic_path(out, directory=True) as tmp:
        shards = batch_shards(dataset, bid)
        for i, shard in enumerate(shards):
            feats_ = shard_features(shard, clip, clap, vae, rejects)
            if feats_ is not None:
                write_shard(tmp / shard.stem, feats_["arrays"], feats_["ids"], feats_["captions"])
                counts[shard.stem] = len(feats_["ids"])
            log.info("%s %s: %d/%d shards encoded", STAGE, bid, i + 1, len(shards))
        rejects.write(tmp / "rejects.jsonl")
        summary = {"batch": bid, "shards": counts, "samples": sum(counts.values()), "rejected": len(rejects)}
        write_json(tmp / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    cli.setup_logging()
    ap = cli.parser("Encode one batch's AVGen shards: CLIP, CLAP embeddings and SD-VAE latents per sample.")
    ap.add_argument("--dataset", required=True, help="the packed dataset, artifacts/avgen_dataset")
    ap.add_argument("--batch", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    s = run(args.dataset, args.batch, args.out, args.params, args.threads)
    log.info("%s %s: %d samples in %d shards, %d rejected", STAGE, args.batch, s["samples"], len(s["shards"]), s["rejected"])
