"""Teacher stage: train the PVTT DiT on the packed train split with flow matching.

The source video and edit mask are always given (they define the task); the reference image
and caption are dropped together with probability ``cond_dropout`` so that classifier-free
guidance on the product works at sampling time.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from .cli import parser, setup_logging
from .io.atomic import atomic_path
from .io.jsonio import write_csv, write_json
from .manifest import write_manifest
from .models.bundle import components_from_params, new_bundle
from .train.data import encode, load_split, shard_paths
from .train.flow import fixed_loss, flow_matching_loss, sample_sigmas, warmup_cosine

log = logging.getLogger(__name__)


def train_teacher(dataset_dir: Path, out_dir: Path, params: dict) -> dict:
    tp, td = params["teacher"], params["train_data"]
    seed = int(tp.get("seed", 0))
    torch.manual_seed(seed)
    components = components_from_params(params.get("model", {}), td)
    bundle = new_bundle(components, seed)
    train = encode(load_split(dataset_dir, "train", td), bundle)
    try:
        val = encode(load_split(dataset_dir, "val", td), bundle)
    except (FileNotFoundError, ValueError):
        val = train
    model = bundle.dit
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    log.info("teacher: %s preset, %.2fM params, %d train / %d val triplets", components["preset"], n_params / 1e6, len(train), len(val))
    iters, batch, lr = int(tp["iterations"]), int(tp["batch_size"]), float(tp["lr"])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    shift = float(tp["shift"])
    val_before = fixed_loss(model, val.target, val.cond, shift)
    rows, t0 = [], time.time()
    for step in range(iters):
        for group in opt.param_groups:
            group["lr"] = lr * warmup_cosine(step, iters, int(tp["warmup"]))
        idx = torch.randint(0, len(train), (batch,), generator=g)
        keep = torch.rand(batch, generator=g) >= float(tp["cond_dropout"])
        cond = train.cond.select(idx).drop(keep)
        x0 = train.target[idx]
        sigma = sample_sigmas(batch, shift, g)
        noise = torch.randn(x0.shape, generator=g)
        loss = flow_matching_loss(model, x0, cond, sigma, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        rows.append((step, loss.item(), opt.param_groups[0]["lr"], float(gnorm)))
        if step % max(1, iters // 20) == 0 or step == iters - 1:
            log.info("teacher step %d/%d loss %.4f lr %.2e", step + 1, iters, loss.item(), opt.param_groups[0]["lr"])
    seconds = time.time() - t0
    val_after = fixed_loss(model, val.target, val.cond, shift)
    k = max(1, iters // 10)
    metrics = {
        "iterations": iters, "batch_size": batch, "params_millions": round(n_params / 1e6, 3),
        "train_loss_first": round(sum(r[1] for r in rows[:k]) / k, 6),
        "train_loss_last": round(sum(r[1] for r in rows[-k:]) / k, 6),
        "val_loss_before": round(val_before, 6), "val_loss_after": round(val_after, 6),
        "train_triplets": len(train), "val_triplets": len(val),
    }
    # Throughput goes to the log, not the artifact: artifacts must be byte-reproducible.
    log.info("teacher: val loss %.4f -> %.4f; %.2f samples/s", val_before, val_after, iters * batch / max(seconds, 1e-9))
    with atomic_path(out_dir, directory=True) as tmp:
        model.save(tmp, extra={"components": components, "kind": "teacher", "shift": shift})
        write_csv(tmp / "loss.csv", ["step", "loss", "lr", "grad_norm"],
                  ([r[0], f"{r[1]:.6f}", f"{r[2]:.6e}", f"{r[3]:.6f}"] for r in rows))
        write_json(tmp / "metrics.json", metrics)
        write_manifest(tmp, "teacher", params, shard_paths(dataset_dir, "train"), {"train_triplets": len(train)},
                       extra={"metrics": metrics})
    return metrics


def main(argv=None) -> None:
    setup_logging()
    ap = parser("Train the PVTT teacher (tiny Wan DiT on the sample) on the packed train split.")
    ap.add_argument("--dataset", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, a.threads))
    train_teacher(a.dataset, a.out, a.params)
