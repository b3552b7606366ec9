"""Teacher stage: train the PVTT DiT on the packed train split with flow matching.

The source video and edit mask are always given (they define the task); the reference image
and caption are dropped together with probability ``cond_dropout`` so that classifier-free
guidance on the product works at sampling time.

Crash safety: with ``--checkpoint-dir`` the loop saves model, AdamW state, loss rows and every
RNG state each ``teacher.checkpoint_every`` steps (``pvtt.train.checkpoint``) and resumes from
the newest matching checkpoint; a killed and resumed run ends with the same bytes as an
uninterrupted one on CPU.

Data (``teacher.data``): ``latents`` (default) reads the latent cache (``pvtt.latents``), not
the videos; ``stream`` trains straight from the WebDataset shards of ``--dataset``: worker
processes decode each step's batch (``pvtt.train.loader``, batches a pure function of seed and
step, so resume stays exact) while the frozen codec and encoders encode it here (what a team
runs when augmenting or when 20K clips of latents do not fit). Options in ``teacher``: ``lora``
(peft adapters, ``pvtt.train.lora``), ``grad_accum`` micro-batches per update, ``precision``
bf16 autocast, ``gradient_checkpointing`` per DiT block. Multi-process: launched by
``torch.distributed.run`` with WORLD_SIZE > 1, the loop is data-parallel as
``pvtt.train.distributed`` describes; rank 0 validates and writes. With ``teacher.deepspeed``
(a ZeRO config, configs/deepspeed/) DeepSpeed shards the optimiser state (``pvtt.train.zero``).

Phases: the teacher trains in three chained rules (``teacher_phase1`` -> ``teacher_phase2`` ->
``teacher``), each with ``teacher`` params overridden by ``teacher_phases.<phase>``
(``phase_params``). A phase starts from the previous phase's weights when both train the same
model; phase 1 may train another model at another resolution (the seed's 1.3B prototype at
480p before the 14B at 720p), and then phase 2 starts from ``model.base``. ``unfreeze: N``
trains the last N DiT blocks in full beside the LoRA adapters (phase 3).

Logs: every step to DVCLive under ``--live-dir`` (and wandb offline with ``teacher.log.wandb``);
every ``eval_every`` steps ``pvtt.train.periodic_eval`` scores sampled val clips. The artifact
holds the same series replayed from the checkpointed rows (``dvclive/``, ``eval.csv``), so
``dvc plots show`` / ``dvc exp show`` read them and the artifact stays reproducible.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from .cli import parser, setup_logging
from .io.atomic import atomic_path
from .io.jsonio import write_csv, write_json
from .manifest import sha256_file, write_manifest
from .models.base import init_from_base, load_base_state
from .models.bundle import components_from_params, new_bundle
from .models.dit import read_config
from .phases import PHASES, phase_params
from .media import gif_bytes
from .latents import latent_files, load_latents
from .train import distributed as ddp
from .train import zero
from .train.checkpoint import Checkpointer, fingerprint, rng_state, set_rng_state
from .train.data import encode
from .train.flow import draw_batch, fixed_loss, flow_matching_loss, noise_batch, warmup_cosine
from .train.loader import ShardDataset, StepBatches, load_all, make_loader
from .train.lora import apply_lora, merge_lora, save_adapter, unfreeze_last_blocks
from .train.periodic_eval import COLUMNS as EVAL_COLUMNS, PeriodicEval
from .train.tracking import LiveLog, write_history

log = logging.getLogger(__name__)

def _init_from(model, components: dict, init_dir: Path | None) -> str:
    """Start from the previous phase when it trained this same model; say what happened."""
    if init_dir is None:
        return "base" if components.get("base") else "scratch"
    prev = read_config(init_dir)
    if prev.get("components") != components:
        log.info("teacher: %s trained another model (%s); this phase starts from %s", init_dir,
                 prev.get("components", {}).get("preset"), "model.base" if components.get("base") else "scratch")
        return f"base (previous phase {init_dir.name} trained another model)"
    model.load_state_dict(load_file(str(init_dir / "model.safetensors")))
    log.info("teacher: continuing from %s", init_dir)
    return f"previous phase {init_dir.name}"


DATA_SOURCES = ("latents", "stream")


def _stream_data(dataset_dir: Path | None, td: dict, bundle, workers: int) -> tuple[ShardDataset, object]:
    """(train shards as a dataset, encoded val split) for ``teacher.data: stream``."""
    if dataset_dir is None:
        raise ValueError("teacher.data 'stream' reads the packed shards: pass --dataset (artifacts/dataset)")
    train = ShardDataset(dataset_dir, "train", td)
    try:
        val_tr = load_all(dataset_dir, "val", td, workers)
    except FileNotFoundError:
        val_tr = load_all(dataset_dir, "train", td, workers)
    return train, encode(val_tr, bundle)


def train_teacher(latents_dir: Path, out_dir: Path, params: dict, checkpoint_dir: Path | None = None,
                  device: str | torch.device = "cpu", init_dir: Path | None = None,
                  live_dir: Path | None = None, dataset_dir: Path | None = None, workers: int = 0) -> dict:
    tp, td = params["teacher"], params["train_data"]
    phase = params.get("phase", "teacher")
    device = torch.device(device)
    world, rank = ddp.world()
    seed = int(tp.get("seed", 0))
    torch.manual_seed(seed)
    components = components_from_params(params.get("model", {}), td)
    bundle = new_bundle(components, seed)
    if params.get("model", {}).get("base"):  # a pretrained Wan DiT; the new conditioning starts at zero
        init_from_base(bundle.dit, load_base_state(params["model"]["base"]))
    source = tp.get("data", "latents")
    if source not in DATA_SOURCES:
        raise ValueError(f"params key 'teacher.data' must be one of {', '.join(DATA_SOURCES)}, got {source!r}")
    if source == "stream":
        train, val = _stream_data(dataset_dir, td, bundle, workers)
        data_files = list(train.shards)
    else:
        train, val = load_latents(latents_dir, components, td)
        data_files = latent_files(latents_dir)
    model = bundle.dit
    started_from = _init_from(model, components, Path(init_dir) if init_dir else None)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    log.info("teacher %s: %s preset, %.2fM params, %d train / %d val triplets", phase, components["preset"],
             n_params / 1e6, len(train), len(val))
    iters, batch, lr = int(tp["iterations"]), int(tp["batch_size"]), float(tp["lr"])
    mine = ddp.share(batch, "teacher.batch_size")
    lora_cfg = tp.get("lora") or {}
    lora = apply_lora(model, lora_cfg) if int(lora_cfg.get("rank", 0)) > 0 else None  # else: full fine-tuning
    if int(tp.get("unfreeze", 0)):
        if lora is None:
            raise ValueError(f"teacher_phases.{phase}.unfreeze needs lora.rank > 0 (without LoRA every block trains already)")
        lora["unfrozen_blocks"] = unfreeze_last_blocks(model, int(tp["unfreeze"]))
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    accum = int(tp.get("grad_accum", 1))
    bf16 = tp.get("precision", "fp32") == "bf16"  # autocast; weights and optimiser state stay fp32
    model.gradient_checkpointing = bool(tp.get("gradient_checkpointing", False))
    g = torch.Generator().manual_seed(seed)
    shift = float(tp["shift"])
    inputs = data_files + ([Path(init_dir) / "model.safetensors"] if init_dir else [])
    fp = fingerprint("teacher", params, {f"{p.parent.name}/{p.name}": sha256_file(p) for p in inputs}, world_size=world)
    ckpt = Checkpointer(checkpoint_dir, int(tp.get("checkpoint_every", 50)), fp, "teacher", writer=rank == 0)
    every = int(tp.get("eval_every", 0))
    evaluator = PeriodicEval(val, bundle.codec, int(tp.get("eval_items", 2)), int(tp.get("eval_steps", 10)), shift,
                             float(tp.get("eval_cfg", 3.0))) if rank == 0 and every else None
    engine = None  # DeepSpeed ZeRO (teacher.deepspeed), else plain all_reduce data parallelism
    ds_dir = Path(checkpoint_dir) / "deepspeed" if checkpoint_dir else None
    found = None
    if ckpt.enabled and not tp.get("deepspeed"):
        path = ckpt.find() if rank == 0 else None
        found = ddp.broadcast_from_rank0(str(path) if path else None)
    start, rows, evals, media, val_before = 0, [], [], {}, None
    if rank == 0 and not found:  # (a DeepSpeed resume overwrites it: its checkpoint is read after wrapping)
        val_before = fixed_loss(model, val.target, val.cond, shift)  # validation stays on the CPU
    if device.type != "cpu":
        model.to_device(device)  # before loading the optimiser state, which follows its parameters' device
    if tp.get("deepspeed"):
        engine = zero.wrap(model, opt, zero.load_config(tp["deepspeed"], batch, accum, world, bf16))
        state = zero.resume(engine, ds_dir, fp) if ckpt.enabled else None
        if state:
            found = f"{ds_dir} (DeepSpeed)"
            set_rng_state(state["rng"], {"batch": g})
    elif found:
        state = Checkpointer.load(found)  # on the CPU: RNG states must be CPU tensors
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"], {"batch": g})
    if found:
        start, rows, val_before = int(state["step"]), [tuple(r) for r in state["rows"]], state["val_before"]
        evals, media = list(state.get("evals", [])), dict(state.get("media", {}))
        log.info("teacher: resuming from step %d of %d (checkpoint %s)", start, iters, found)
    elif ckpt.enabled:
        log.info("teacher: no checkpoint to resume in %s: starting from step 0 (checkpoint every %d steps)",
                 checkpoint_dir, ckpt.every)
    live = None
    if rank == 0 and live_dir is not None:
        wandb_dir = Path(live_dir).parent / "wandb" if (tp.get("log") or {}).get("wandb") else None
        live = LiveLog(Path(live_dir), resume=start > 0, config=params, wandb_dir=wandb_dir, name=phase)
    stream = None
    if source == "stream":  # decoded ahead by `workers` processes while the model trains
        stream = iter(make_loader(train, StepBatches(seed, len(train), batch, accum, start, iters), workers))
        log.info("teacher: streaming %d train triplets from %d shards, %d decoding worker(s)", len(train),
                 len(train.shards), workers)
    t0 = tick = time.time()
    for step in range(start, iters):
        for group in opt.param_groups:
            group["lr"] = lr * warmup_cosine(step, iters, int(tp["warmup"]))
        opt.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=device)
        for _ in range(accum):  # micro-batches of batch_size; their gradients add up before the update
            if stream is not None:
                enc = encode(next(stream), bundle)
                x0, cond, sigma, noise = noise_batch(enc.target, enc.cond, float(tp["cond_dropout"]), shift, g)
            else:
                x0, cond, sigma, noise = draw_batch(train, batch, float(tp["cond_dropout"]), shift, g)
            if world > 1:
                x0, sigma, noise, cond = x0[mine], sigma[mine], noise[mine], cond.select(mine)
            if device.type != "cpu":
                x0, sigma, noise, cond = x0.to(device), sigma.to(device), noise.to(device), cond.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and engine is None):
                micro = flow_matching_loss(model, x0, cond, sigma, noise)
            share = micro.float() * ((mine.stop - mine.start) / batch / accum)
            if engine is not None:  # scales by 1/accum, averages over ranks, updates at the boundary
                engine.backward(micro.float())
                engine.step()
            else:
                share.backward()
            loss = loss + share.detach()
        loss = ddp.allreduce_sum(loss)
        if engine is not None:
            gnorm = engine.get_global_grad_norm()  # clipped to 1.0 by the config's gradient_clipping
            gnorm = float("nan") if gnorm is None else gnorm
        else:
            ddp.allreduce_grads(trainable)
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        rows.append((step, loss.item(), opt.param_groups[0]["lr"], float(gnorm)))
        if live is not None:
            now = time.time()
            live.log(step, {"train/loss": rows[-1][1], "train/lr": rows[-1][2], "train/grad_norm": rows[-1][3],
                            "perf/samples_per_s": batch * accum / max(now - tick, 1e-9)})
            tick = now
        if step % max(1, iters // 20) == 0 or step == iters - 1:
            log.info("teacher step %d/%d loss %.4f lr %.2e", step + 1, iters, loss.item(), opt.param_groups[0]["lr"])
        if evaluator is not None and ((step + 1) % every == 0 or step == iters - 1):
            row, frames = evaluator(model, step + 1)
            evals.append(row)
            name = f"eval/sample_step{step + 1:06d}.gif"
            media[name] = gif_bytes(frames)
            log.info("teacher eval at step %d: %s", step + 1, ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "step"))
            if live is not None:
                live.log(step, {f"eval/{k}": v for k, v in row.items() if k != "step"})
                live.image(step, name, media[name])
        if ckpt.due(step + 1, iters):
            loop_state = {"rng": rng_state({"batch": g}), "rows": rows, "val_before": val_before, "evals": evals,
                          "media": media, "step": step + 1}
            if engine is not None:
                zero.save(engine, ds_dir, step + 1, {**loop_state, "fp": fp})
            else:
                ckpt.save(step + 1, {"model": model.state_dict(), "optimizer": opt.state_dict(), **loop_state})
    seconds = time.time() - t0
    if live is not None:
        live.close()
    ddp.barrier()
    with zero.gathered(engine, model):  # ZeRO-3: every rank holds the whole weights inside
        metrics = None
        if rank == 0:
            if device.type != "cpu":
                model.to_device(torch.device("cpu"))
            val_after = fixed_loss(model, val.target, val.cond, shift)
            k = max(1, iters // 10)
            metrics = {
                "iterations": iters, "batch_size": batch, "params_millions": round(n_params / 1e6, 3),
                "train_loss_first": round(sum(r[1] for r in rows[:k]) / k, 6),
                "train_loss_last": round(sum(r[1] for r in rows[-k:]) / k, 6),
                "val_loss_before": round(val_before, 6), "val_loss_after": round(val_after, 6),
                "train_triplets": len(train), "val_triplets": len(val),
            }
            if evals:
                metrics.update({f"eval_{c}": round(v, 6) for c, v in evals[-1].items() if c != "step"})
            # Throughput goes to the log, not the artifact: artifacts must be byte-reproducible.
            log.info("teacher: val loss %.4f -> %.4f; %.2f samples/s (%d process%s)", val_before, val_after,
                     (iters - start) * batch * accum / max(seconds, 1e-9), world, "es" if world > 1 else "")
            with atomic_path(out_dir, directory=True) as tmp:
                if lora:  # the adapters alone, then the merged plain DiT that students and the engine load
                    save_adapter(model, tmp, lora)
                    merge_lora(model)
                model.save(tmp, extra={"components": components, "kind": "teacher", "shift": shift, "phase": phase,
                                       "started_from": started_from})
                write_csv(tmp / "loss.csv", ["step", "loss", "lr", "grad_norm"],
                          ([r[0], f"{r[1]:.6f}", f"{r[2]:.6e}", f"{r[3]:.6f}"] for r in rows))
                write_csv(tmp / "eval.csv", list(EVAL_COLUMNS),
                          ([e["step"]] + [f"{e[c]:.6f}" for c in EVAL_COLUMNS[1:]] for e in evals))
                _write_dvclive(tmp, rows, evals, media, metrics)
                write_json(tmp / "metrics.json", metrics)
                write_manifest(tmp, "teacher", params, inputs, {"train_triplets": len(train)},
                               extra={"metrics": metrics, "phase": phase, "started_from": started_from})
    ddp.barrier()
    return metrics


def _write_dvclive(out: Path, rows: list, evals: list[dict], media: dict[str, bytes], metrics: dict) -> None:
    """The run's series as DVCLive files in the artifact (what dvc plots / dvc exp show read)."""
    series = {"train/loss": [(r[0], r[1]) for r in rows], "train/lr": [(r[0], r[2]) for r in rows],
              "train/grad_norm": [(r[0], r[3]) for r in rows]}
    for c in EVAL_COLUMNS[1:]:
        series[f"eval/{c}"] = [(e["step"], e[c]) for e in evals]
    write_history(out / "dvclive", series, media, {k: v for k, v in metrics.items() if isinstance(v, float)})


def main(argv=None) -> None:
    setup_logging(logging.INFO if ddp.launched_rank() == 0 else logging.WARNING)
    ap = parser("Train the PVTT teacher (tiny Wan DiT on the sample) on the packed train split.")
    ap.add_argument("--latents", required=True, type=Path, help="the latent cache (artifacts/latents)")
    ap.add_argument("--dataset", type=Path, default=None, help="the packed shards (artifacts/dataset), for teacher.data: stream")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for the whole job (split over processes)")
    ap.add_argument("--gpus", type=int, default=0, help="GPUs of the job: > 0 trains on cuda:LOCAL_RANK when CUDA is there")
    ap.add_argument("--checkpoint-dir", type=Path, default=None,
                    help="where to save and resume checkpoints (outside the output: Snakemake deletes failed outputs)")
    ap.add_argument("--phase", choices=PHASES, help="train this phase: teacher params overridden by teacher_phases.<phase>")
    ap.add_argument("--init", type=Path, default=None, help="the previous phase's teacher, to continue from")
    ap.add_argument("--live-dir", type=Path, default=None, help="DVCLive directory for the running log (work/dvclive/<rule>)")
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, a.threads // max(1, ddp.launched_world())))
    device = ddp.init(a.gpus, "teacher")
    params = phase_params(a.params, a.phase) if a.phase else a.params
    try:
        # Decoding workers: the job's threads beyond the one that trains (teacher.data: stream).
        workers = max(0, a.threads // max(1, ddp.launched_world()) - 1)
        train_teacher(a.latents, a.out, params, a.checkpoint_dir, device, a.init, a.live_dir, a.dataset, workers)
    finally:
        ddp.shutdown()
