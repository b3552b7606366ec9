"""Teacher stage: train the PVTT DiT on the packed train split with flow matching.

The source video and edit mask are always given (they define the task); the reference image
and caption are dropped together with probability ``cond_dropout`` so that classifier-free
guidance on the product works at sampling time.

Crash safety: with ``--checkpoint-dir`` the loop saves model, AdamW state, loss rows and every
RNG state each ``teacher.checkpoint_every`` steps (``pvtt.train.checkpoint``) and resumes from
the newest matching checkpoint; a killed and resumed run ends with the same bytes as an
uninterrupted one on CPU.

Multi-process: launched by ``torch.distributed.run`` with WORLD_SIZE > 1, every rank draws the
same global batch from the same generator, trains on its contiguous share, and the gradients
(each rank's loss weighted by its share of the batch) are summed with one all_reduce (gloo on
CPU, nccl on GPU), so the update is the one of the whole batch. Only rank 0 computes
validation losses and writes checkpoints and the artifact. With WORLD_SIZE 1 (or no launcher)
nothing of this runs and the loop is the single-process one.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from .cli import parser, setup_logging
from .io.atomic import atomic_path
from .io.jsonio import write_csv, write_json
from .manifest import write_manifest
from .models.bundle import components_from_params, new_bundle
from .models.sampler import Conditions
from .train.checkpoint import Checkpointer, dataset_identity, fingerprint, rng_state, set_rng_state
from .train.data import load_train_val, shard_paths
from .train.flow import fixed_loss, flow_matching_loss, sample_sigmas, warmup_cosine

log = logging.getLogger(__name__)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _barrier() -> None:
    if _world()[0] > 1:
        dist.barrier()


def _cond_to(cond: Conditions, device: torch.device) -> Conditions:
    return Conditions(*(t.to(device) for t in (cond.source, cond.mask, cond.image_tokens, cond.text_tokens)))


def _to_device(model, device: torch.device):
    """``model.to(device)``, plus the RoPE tables DiffSynth keeps as a plain attribute (not a buffer)."""
    model.to(device)
    model.wan.freqs = tuple(f.to(device) for f in model.wan.freqs)
    model._real_rope_cache.clear()
    return model


def _allreduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Sum the gradients over ranks in one flat all_reduce (each rank's loss is already weighted
    by its share of the batch); a parameter without a gradient on a rank counts as zero there."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    off = 0
    for p in params:
        n = p.numel()
        p.grad = flat[off:off + n].view_as(p)
        off += n


def train_teacher(dataset_dir: Path, out_dir: Path, params: dict, checkpoint_dir: Path | None = None,
                  device: str | torch.device = "cpu") -> dict:
    tp, td = params["teacher"], params["train_data"]
    device = torch.device(device)
    world, rank = _world()
    seed = int(tp.get("seed", 0))
    torch.manual_seed(seed)
    components = components_from_params(params.get("model", {}), td)
    bundle = new_bundle(components, seed)
    train, val = load_train_val(dataset_dir, td, bundle)
    model = bundle.dit
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    log.info("teacher: %s preset, %.2fM params, %d train / %d val triplets", components["preset"], n_params / 1e6, len(train), len(val))
    iters, batch, lr = int(tp["iterations"]), int(tp["batch_size"]), float(tp["lr"])
    if batch < world:
        raise ValueError(f"teacher.batch_size: {batch} is smaller than the {world} training processes")
    lo, hi = rank * batch // world, (rank + 1) * batch // world  # this rank's share of the batch
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    shift = float(tp["shift"])
    fp = fingerprint("teacher", params, {"dataset": dataset_identity(dataset_dir)}, world_size=world)
    ckpt = Checkpointer(checkpoint_dir, int(tp.get("checkpoint_every", 50)), fp, "teacher", writer=rank == 0)
    found = None
    if ckpt.enabled:
        path = ckpt.find() if rank == 0 else None
        box = [str(path) if path else None]
        if world > 1:
            dist.broadcast_object_list(box, src=0)
        found = box[0]
    start, rows, val_before = 0, [], None
    if not found and rank == 0:
        val_before = fixed_loss(model, val.target, val.cond, shift)  # validation stays on the CPU
    if device.type != "cpu":
        _to_device(model, device)  # before loading the optimiser state, which follows its parameters' device
    if found:
        state = Checkpointer.load(found)  # on the CPU: RNG states must be CPU tensors
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"], {"batch": g})
        start, rows, val_before = int(state["step"]), [tuple(r) for r in state["rows"]], state["val_before"]
        log.info("teacher: resuming from step %d of %d (checkpoint %s)", start, iters, found)
    elif ckpt.enabled:
        log.info("teacher: no checkpoint to resume in %s: starting from step 0 (checkpoint every %d steps)",
                 checkpoint_dir, ckpt.every)
    trainable = [p for p in model.parameters() if p.requires_grad]
    t0 = time.time()
    for step in range(start, iters):
        for group in opt.param_groups:
            group["lr"] = lr * warmup_cosine(step, iters, int(tp["warmup"]))
        idx = torch.randint(0, len(train), (batch,), generator=g)
        keep = torch.rand(batch, generator=g) >= float(tp["cond_dropout"])
        cond = train.cond.select(idx).drop(keep)
        x0 = train.target[idx]
        sigma = sample_sigmas(batch, shift, g)
        noise = torch.randn(x0.shape, generator=g)
        if world > 1:
            x0, sigma, noise, cond = x0[lo:hi], sigma[lo:hi], noise[lo:hi], cond.select(slice(lo, hi))
        if device.type != "cpu":
            x0, sigma, noise, cond = x0.to(device), sigma.to(device), noise.to(device), _cond_to(cond, device)
        loss = flow_matching_loss(model, x0, cond, sigma, noise)
        if world > 1:
            loss = loss * ((hi - lo) / batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if world > 1:
            _allreduce_grads(trainable)
            loss = loss.detach().clone()
            dist.all_reduce(loss)
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        rows.append((step, loss.item(), opt.param_groups[0]["lr"], float(gnorm)))
        if step % max(1, iters // 20) == 0 or step == iters - 1:
            log.info("teacher step %d/%d loss %.4f lr %.2e", step + 1, iters, loss.item(), opt.param_groups[0]["lr"])
        if ckpt.due(step + 1, iters):
            ckpt.save(step + 1, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                 "rng": rng_state({"batch": g}), "rows": rows, "val_before": val_before})
    seconds = time.time() - t0
    _barrier()
    metrics = None
    if rank == 0:
        if device.type != "cpu":
            _to_device(model, torch.device("cpu"))
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
        log.info("teacher: val loss %.4f -> %.4f; %.2f samples/s (%d process%s)", val_before, val_after,
                 (iters - start) * batch / max(seconds, 1e-9), world, "es" if world > 1 else "")
        with atomic_path(out_dir, directory=True) as tmp:
            model.save(tmp, extra={"components": components, "kind": "teacher", "shift": shift})
            write_csv(tmp / "loss.csv", ["step", "loss", "lr", "grad_norm"],
                      ([r[0], f"{r[1]:.6f}", f"{r[2]:.6e}", f"{r[3]:.6f}"] for r in rows))
            write_json(tmp / "metrics.json", metrics)
            write_manifest(tmp, "teacher", params, shard_paths(dataset_dir, "train"), {"train_triplets": len(train)},
                           extra={"metrics": metrics})
    _barrier()
    return metrics


def _init_distributed(gpus: int) -> torch.device:
    """Join the process group when launched with WORLD_SIZE > 1; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = gpus > 0 and torch.cuda.is_available()
    if gpus > 0 and not cuda:
        log.warning("teacher: %d GPU(s) requested but CUDA is not available: training on CPU", gpus)
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo")
        log.info("teacher: rank %d of %d (%s, backend %s)", dist.get_rank(), world, device, dist.get_backend())
    return device


def main(argv=None) -> None:
    rank = int(os.environ.get("RANK", "0"))
    setup_logging(logging.INFO if rank == 0 else logging.WARNING)
    ap = parser("Train the PVTT teacher (tiny Wan DiT on the sample) on the packed train split.")
    ap.add_argument("--dataset", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for the whole job (split over processes)")
    ap.add_argument("--gpus", type=int, default=0, help="GPUs of the job: > 0 trains on cuda:LOCAL_RANK when CUDA is there")
    ap.add_argument("--checkpoint-dir", type=Path, default=None,
                    help="where to save and resume checkpoints (outside the output: Snakemake deletes failed outputs)")
    a = ap.parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, a.threads // max(1, world)))
    device = _init_distributed(a.gpus)
    try:
        train_teacher(a.dataset, a.out, a.params, a.checkpoint_dir, device)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
