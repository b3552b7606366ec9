"""Training throughput: the data path alone against the full teacher step, in one run.

The data path is what the teacher loop does before the model sees a batch: read the latent
cache from disk, then per step draw the batch indices, the CFG dropout, the noise levels and
the noise, and gather the batch. The full step adds the forward, backward and AdamW update of
the configured preset. Both are timed in the same process, one after the other, so the ratio
is meaningful on a noisy machine; the last line is ``loader_to_step=<loader samples/s ÷ step
samples/s>`` and the loader is not the bottleneck when it is at least 2.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from genbuild.train.flow import draw_batch, flow_matching_loss
from genbuild.workflow import namespace
from pvtt.models.bundle import components_from_params, new_bundle
from pvtt.train.latents import load_latents


def bench(latents_dir: Path, params: dict, loader_batches: int, steps: int, warmup: int = 2) -> dict:
    tp, td = params["teacher"], params["train_data"]
    components = components_from_params(params.get("model", {}), td)
    batch, shift, dropout = int(tp["batch_size"]), float(tp["shift"]), float(tp["cond_dropout"])
    g = torch.Generator().manual_seed(0)

    t0 = time.perf_counter()
    train, _ = load_latents(latents_dir, components)
    for _ in range(loader_batches):
        draw_batch(train, batch, dropout, shift, g)
    loader_s = time.perf_counter() - t0

    model = new_bundle(components, 0).dit.train()
    opt = torch.optim.AdamW(model.parameters(), lr=float(tp["lr"]))
    for i in range(warmup + steps):
        if i == warmup:
            t1 = time.perf_counter()
        x0, cond, sigma, noise = draw_batch(train, batch, dropout, shift, g)
        loss = flow_matching_loss(model, x0, cond, sigma, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    step_s = time.perf_counter() - t1
    loader_rate, step_rate = loader_batches * batch / loader_s, steps * batch / step_s
    return {"preset": components["preset"], "batch_size": batch, "train_triplets": len(train),
            "threads": torch.get_num_threads(), "loader_samples_per_s": round(loader_rate, 1),
            "step_samples_per_s": round(step_rate, 2), "loader_to_step": round(loader_rate / step_rate, 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latents", type=Path, default=Path("artifacts/latents"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--loader-batches", type=int, default=200)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    if not (a.latents / "train.safetensors").is_file():
        raise SystemExit(f"{a.latents}: no latent cache; build it first: snakemake --cores all {a.latents}")
    torch.set_num_threads(a.threads)
    params = namespace(yaml.safe_load(a.params.read_text()), "pvtt")  # PVTT's keys with the shared ones
    r = bench(a.latents, params, a.loader_batches, a.steps)
    print(json.dumps(r, sort_keys=True))
    print(f"loader_to_step={r['loader_to_step']}")


if __name__ == "__main__":
    main()
