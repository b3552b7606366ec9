"""Teacher stage: train the PVTT DiT on the packed train split with flow matching.

The source video and edit mask are always given (they define the task); the reference image
and caption are dropped together with probability ``cond_dropout`` so that classifier-free
guidance on the product works at sampling time.

Crash safety: with ``--checkpoint-dir`` the loop saves model, AdamW state, loss rows and every
RNG state each ``teacher.checkpoint_every`` steps (``genbuild.train.checkpoint``) and resumes from
the newest matching checkpoint; a killed and resumed run ends with the same bytes as an
uninterrupted one on CPU.

Data (``teacher.data``): ``latents`` (default) reads the latent cache (``pvtt.train.latents``), not
the videos; ``stream`` trains straight from the WebDataset shards of ``--dataset``: worker
processes decode each step's batch (``pvtt.train.loader``, batches a pure function of seed and
step, so resume stays exact) while the frozen codec and encoders encode it here (what a team
runs when augmenting or when 20K clips of latents do not fit). Options in ``teacher``: ``lora``
(peft adapters, ``genbuild.train.lora``), ``grad_accum`` micro-batches per update, ``precision``
bf16 autocast, ``gradient_checkpointing`` per DiT block. Multi-process: launched by
``torch.distributed.run`` with WORLD_SIZE > 1, the loop is data-parallel as
``genbuild.train.distributed`` describes; rank 0 validates and writes. With ``teacher.deepspeed``
(a ZeRO config, configs/deepspeed/) DeepSpeed shards the optimiser state (``genbuild.train.zero``).

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

This module only assembles: the model (base init, previous phase, LoRA, unfrozen blocks), the
data source, the ``FlowMatching`` method (``genbuild.train.methods.flow_matching``) and the
generic ``Trainer`` (``genbuild.train.trainer``), which owns the loop, checkpoints, logs and
distribution; then it writes the artifact.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import write_csv, write_json
from genbuild.manifest import sha256_file, write_manifest
from genbuild.stage import parser, setup_logging
from genbuild.train import distributed as ddp
from genbuild.train import zero
from genbuild.train.checkpoint import Checkpointer, fingerprint
from genbuild.train.flow import fixed_loss, pick_batch
from genbuild.train.lora import apply_lora, merge_lora, save_adapter, unfreeze_last_blocks
from genbuild.train.methods.flow_matching import FlowMatching, FlowMatchingConfig
from genbuild.train.tracking import LiveLog, write_history
from genbuild.train.trainer import Run, Trainer
from genbuild.workflow import script_code_files
from pvtt.models.base import init_from_base, load_base_state
from pvtt.models.bundle import components_from_params, new_bundle
from pvtt.models.conditions import Conditions
from pvtt.models.dit import read_config
from pvtt.train.data import encode
from pvtt.train.latents import latent_files, load_latents
from pvtt.train.loader import ShardDataset, StepBatches, load_all, make_loader
from pvtt.train.periodic_eval import COLUMNS as EVAL_COLUMNS
from pvtt.train.periodic_eval import PeriodicEval
from pvtt.train.phases import PHASES, phase_params

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


def _load_data(source: str, latents_dir: Path, dataset_dir: Path | None, components: dict, td: dict, bundle,
               workers: int) -> tuple[object, object, list[Path]]:
    """(train, encoded val, the files read) of the data source ``teacher.data``."""
    if source not in DATA_SOURCES:
        raise ValueError(f"params key 'teacher.data' must be one of {', '.join(DATA_SOURCES)}, got {source!r}")
    if source == "stream":
        train, val = _stream_data(dataset_dir, td, bundle, workers)
        return train, val, list(train.shards)
    train, val = load_latents(latents_dir, components, td)
    return train, val, latent_files(latents_dir)


def _batches(source: str, train, bundle, g: torch.Generator, tp: dict, workers: int):
    """The trainer's data: a function of the first step giving ``next_batch`` -> (x0, conditions).

    Latents: random samples drawn from ``g``. Stream: the batches of ``pvtt.train.loader`` (a pure
    function of seed and step, so a resumed run sees the same ones), decoded ahead by ``workers``
    processes while the model trains and encoded here with the frozen codec and encoders."""
    batch = int(tp["batch_size"])
    if source != "stream":
        return lambda start: functools.partial(pick_batch, train, batch, g)

    def open_stream(start: int):
        steps = StepBatches(int(tp.get("seed", 0)), len(train), batch, int(tp.get("grad_accum", 1)), start,
                            int(tp["iterations"]))
        stream = iter(make_loader(train, steps, workers))
        log.info("teacher: streaming %d train triplets from %d shards, %d decoding worker(s)", len(train),
                 len(train.shards), workers)

        def next_batch():
            enc = encode(next(stream), bundle)
            return enc.target, enc.cond
        return next_batch
    return open_stream


def _adapt(model, tp: dict, phase: str) -> dict | None:
    """LoRA adapters (``teacher.lora``) and unfrozen blocks (``unfreeze``); None: full fine-tuning."""
    lora_cfg = tp.get("lora") or {}
    lora = apply_lora(model, lora_cfg) if int(lora_cfg.get("rank", 0)) > 0 else None
    if int(tp.get("unfreeze", 0)):
        if lora is None:
            raise ValueError(f"teacher_phases.{phase}.unfreeze needs lora.rank > 0 (without LoRA every block trains already)")
        lora["unfrozen_blocks"] = unfreeze_last_blocks(model, int(tp["unfreeze"]))
    return lora


def _method_config(tp: dict) -> FlowMatchingConfig:
    inside = float(tp.get("mask_loss_weight", 1.0))
    weight = None if inside == 1.0 else functools.partial(Conditions.region_weights, inside=inside)
    return FlowMatchingConfig(iterations=int(tp["iterations"]), batch_size=int(tp["batch_size"]), lr=float(tp["lr"]),
                              warmup=int(tp["warmup"]), cond_dropout=float(tp["cond_dropout"]), shift=float(tp["shift"]),
                              grad_accum=int(tp.get("grad_accum", 1)), bf16=tp.get("precision", "fp32") == "bf16",
                              batch_param="teacher.batch_size", loss_weight=weight)


def _trainer(params: dict, model, bundle, val, g: torch.Generator, fp: str, checkpoint_dir: Path | None,
             live_dir: Path | None) -> Trainer:
    """The loop of this phase: checkpoints, DeepSpeed, periodic evaluation (rank 0), live log (rank 0)."""
    tp, phase = params["teacher"], params.get("phase", "teacher")
    world, rank = ddp.world()
    iters, batch, accum = int(tp["iterations"]), int(tp["batch_size"]), int(tp.get("grad_accum", 1))
    ckpt = Checkpointer(checkpoint_dir, int(tp.get("checkpoint_every", 50)), fp, "teacher", writer=rank == 0)
    every = int(tp.get("eval_every", 0))
    evaluator = PeriodicEval(val, bundle.codec, int(tp.get("eval_items", 2)), int(tp.get("eval_steps", 10)),
                             float(tp["shift"]), float(tp.get("eval_cfg", 3.0))) if rank == 0 and every else None
    ds = zero.load_config(tp["deepspeed"], batch, accum, world) \
        if tp.get("deepspeed") else None
    live = None
    if live_dir is not None:
        wandb_dir = Path(live_dir).parent / "wandb" if (tp.get("log") or {}).get("wandb") else None
        live = functools.partial(LiveLog, Path(live_dir), config=params, wandb_dir=wandb_dir, name=phase)
    return Trainer("teacher", iters, ckpt, {"batch": g}, log_every=max(1, iters // 20), deepspeed=ds, live=live,
                   evaluate=(lambda step: evaluator(model, step)) if evaluator else None, eval_every=every,
                   samples_per_step=batch * accum)


def train_teacher(latents_dir: Path, out_dir: Path, params: dict, checkpoint_dir: Path | None = None,
                  device: str | torch.device = "cpu", init_dir: Path | None = None,
                  live_dir: Path | None = None, dataset_dir: Path | None = None, workers: int = 0) -> dict:
    # The order of what draws from the global RNG (bundle, base init, LoRA init) is the artifact's.
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
    train, val, data_files = _load_data(source, latents_dir, dataset_dir, components, td, bundle, workers)
    model = bundle.dit
    started_from = _init_from(model, components, Path(init_dir) if init_dir else None)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    log.info("teacher %s: %s preset, %.2fM params, %d train / %d val triplets", phase, components["preset"],
             n_params / 1e6, len(train), len(val))
    lora = _adapt(model, tp, phase)
    g = torch.Generator().manual_seed(seed)
    method = FlowMatching(model, _method_config(tp), g, device)
    model.gradient_checkpointing = bool(tp.get("gradient_checkpointing", False))
    inputs = data_files + ([Path(init_dir) / "model.safetensors"] if init_dir else [])
    fp = fingerprint("teacher", params, {f"{p.parent.name}/{p.name}": sha256_file(p) for p in inputs},
                     script_code_files("teacher"), world_size=world)
    trainer = _trainer(params, model, bundle, val, g, fp, checkpoint_dir, live_dir)
    val_before = None
    if rank == 0 and not trainer.resuming:  # validation stays on the CPU (a resumed run has it in its state)
        val_before = fixed_loss(model, val.target, val.cond, float(tp["shift"]))
    if device.type != "cpu":
        model.to_device(device)  # before loading the optimiser state, which follows its parameters' device
    run = trainer.fit(method, _batches(source, train, bundle, g, tp, workers), {"val_before": val_before})
    with trainer.whole_weights(model):  # ZeRO-3: every rank holds the whole weights inside
        metrics = None
        if rank == 0:
            info = {"components": components, "phase": phase, "started_from": started_from, "lora": lora,
                    "inputs": inputs, "n_params": n_params, "train": len(train)}
            metrics = _finish(model, val, run, params, info, device, out_dir)
    ddp.barrier()
    return metrics


def _finish(model, val, run: Run, params: dict, info: dict, device: torch.device, out_dir: Path) -> dict:
    """Rank 0 after the loop: the validation loss after training, the metrics and the artifact."""
    tp = params["teacher"]
    iters, batch, shift = int(tp["iterations"]), int(tp["batch_size"]), float(tp["shift"])
    world = ddp.world()[0]
    if device.type != "cpu":
        model.to_device(torch.device("cpu"))
    val_before, val_after = run.extra["val_before"], fixed_loss(model, val.target, val.cond, shift)
    rows, k = run.rows, max(1, iters // 10)
    metrics = {
        "iterations": iters, "batch_size": batch, "params_millions": round(info["n_params"] / 1e6, 3),
        "train_loss_first": round(sum(r["loss"] for _, r in rows[:k]) / k, 6),
        "train_loss_last": round(sum(r["loss"] for _, r in rows[-k:]) / k, 6),
        "val_loss_before": round(val_before, 6), "val_loss_after": round(val_after, 6),
        "train_triplets": info["train"], "val_triplets": len(val),
    }
    if run.evals:
        metrics.update({f"eval_{c}": round(v, 6) for c, v in run.evals[-1].items() if c != "step"})
    # Throughput goes to the log, not the artifact: artifacts must be byte-reproducible.
    log.info("teacher: val loss %.4f -> %.4f; %.2f samples/s (%d process%s)", val_before, val_after,
             (iters - run.start) * batch * int(tp.get("grad_accum", 1)) / max(run.seconds, 1e-9), world,
             "es" if world > 1 else "")
    _write_artifact(out_dir, model, run, params, info, metrics)
    return metrics


def _write_artifact(out_dir: Path, model, run: Run, params: dict, info: dict, metrics: dict) -> None:
    lora, phase, started_from = info["lora"], info["phase"], info["started_from"]
    with atomic_path(out_dir, directory=True) as tmp:
        if lora:  # the adapters alone, then the merged plain DiT that students and the engine load
            save_adapter(model, tmp, lora)
            merge_lora(model)
        model.save(tmp, extra={"components": info["components"], "kind": "teacher", "shift": float(params["teacher"]["shift"]),
                               "phase": phase, "started_from": started_from})
        write_csv(tmp / "loss.csv", ["step", "loss", "lr", "grad_norm"],
                  ([s, f"{r['loss']:.6f}", f"{r['lr']:.6e}", f"{r['grad_norm']:.6f}"] for s, r in run.rows))
        write_csv(tmp / "eval.csv", list(EVAL_COLUMNS),
                  ([e["step"]] + [f"{e[c]:.6f}" for c in EVAL_COLUMNS[1:]] for e in run.evals))
        _write_dvclive(tmp, run, metrics)
        write_json(tmp / "metrics.json", metrics)
        write_manifest(tmp, "teacher", params, info["inputs"], {"train_triplets": info["train"]},
                       extra={"metrics": metrics, "phase": phase, "started_from": started_from})


def _write_dvclive(out: Path, run: Run, metrics: dict) -> None:
    """The run's series as DVCLive files in the artifact (what dvc plots / dvc exp show read)."""
    series = {f"train/{c}": [(s, r[c]) for s, r in run.rows] for c in FlowMatching.columns}
    for c in EVAL_COLUMNS[1:]:
        series[f"eval/{c}"] = [(e["step"], e[c]) for e in run.evals]
    write_history(out / "dvclive", series, run.media, {k: v for k, v in metrics.items() if isinstance(v, float)})


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
