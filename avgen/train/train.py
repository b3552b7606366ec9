"""AVGen's three training stages on the kit's trainer: unimodal, joint, high-quality fine-tune.

- ``stage1`` (plan lr 1e-4): audio-only and video-only batches alternate micro-batch by
  micro-batch; the network sees one modality at a time (the other's tokens absent), so each
  modality's decoder and the shared backbone learn to denoise it alone first.
- ``stage2`` (5e-5): joint batches, video latents and mel noised at the same level and denoised
  together; the alignment module's cross-modal attention starts to matter.
- ``stage3`` (1e-5): joint, on the highest-quality subset of the train split chosen by
  ``train.stage3.subset`` (``avgen.train.subset``).

Each stage starts from the previous stage's weights (``--init``), trains with the kit's
``FlowMatching`` method (AdamW, warm-up + cosine, CFG dropout of the text, bf16 autocast on GPU,
DeepSpeed ZeRO-2 with ``train.common.deepspeed``) inside the kit's ``Trainer`` (exact resume from
checkpoints in ``--checkpoint-dir``, DVCLive logs), and writes the network as Diffusers folders
plus ``config.json`` (what generating needs: preset, shapes, the frozen components, the format),
``metrics.json`` (validation loss before/after on the val split, per modality) and ``loss.csv``.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import read_json, write_csv, write_json
from genbuild.manifest import sha256_file, write_manifest
from genbuild.stage import parser, setup_logging
from genbuild.train import distributed as ddp
from genbuild.train import zero
from genbuild.train.checkpoint import Checkpointer, fingerprint
from genbuild.train.flow import fixed_loss
from genbuild.train.methods.flow_matching import FlowMatching, FlowMatchingConfig
from genbuild.train.tracking import LiveLog, write_history
from genbuild.train.trainer import Run, Trainer
from genbuild.workflow import script_code_files

log = logging.getLogger("avgen.train.train")

STAGES = ("stage1", "stage2", "stage3")
MODALITIES = {"stage1": ("video", "audio"), "stage2": ("joint",), "stage3": ("joint",)}


def stage_params(params: dict, stage: str) -> dict:
    """train.common overridden by train.<stage>: one flat dict of this stage's settings."""
    return {**params["train"]["common"], **params["train"][stage]}


def batch_of(data, idx: torch.Tensor, modality: str):
    """(x0, conditions) of the samples ``idx`` for one modality: the flat joint target of
    ``avgen.models.conditions``."""
    from avgen.models.conditions import AVConditions, pack

    rows = data.rows(idx)  # read from the memory-mapped shards (or an in-memory split)
    video = rows.latents if modality in ("joint", "video") else None
    audio = rows.mel if modality in ("joint", "audio") else None
    cond = AVConditions(clip_text=rows.clip_text, clap_text=rows.clap_text, modality=modality,
                        video_shape=tuple(rows.latents.shape[1:]), audio_shape=tuple(rows.mel.shape[1:]))
    return pack(video, audio), cond


def batches(data, sp: dict, stage: str, g: torch.Generator):
    """The trainer's data: ``data(start)`` -> ``next_batch``. Random samples drawn from ``g`` (the
    checkpointed batch generator); stage 1 cycles the modalities by micro-batch number, counted from
    the resumed step, so a resumed run sees the same modality sequence."""
    cycle, batch, accum = MODALITIES[stage], int(sp["batch_size"]), int(sp.get("grad_accum", 1))

    def open_at(start: int):
        counter = [start * accum]

        def next_batch():
            modality = cycle[counter[0] % len(cycle)]
            counter[0] += 1
            idx = torch.randint(0, len(data), (batch,), generator=g)
            return batch_of(data, idx, modality)
        return next_batch
    return open_at


def val_losses(model, val, shift: float) -> dict[str, float]:
    """The fixed-noise flow-matching loss of the val split, per modality (joint, video only, audio only)."""
    out = {}
    idx = torch.arange(len(val))
    for modality in ("joint", "video", "audio"):
        x0, cond = batch_of(val, idx, modality)
        out[modality] = round(fixed_loss(model, x0, cond, shift), 6)
    return out


def _method_config(sp: dict) -> FlowMatchingConfig:
    return FlowMatchingConfig(iterations=int(sp["iterations"]), batch_size=int(sp["batch_size"]), lr=float(sp["lr"]),
                              warmup=int(sp["warmup"]), cond_dropout=float(sp["cond_dropout"]), shift=float(sp["shift"]),
                              grad_accum=int(sp.get("grad_accum", 1)), bf16=sp.get("precision", "fp32") == "bf16",
                              batch_param="train.common.batch_size")


def _trainer(stage: str, sp: dict, params: dict, g: torch.Generator, fp: str, checkpoint_dir: Path | None,
             live_dir: Path | None) -> Trainer:
    world, rank = ddp.world()
    iters, batch, accum = int(sp["iterations"]), int(sp["batch_size"]), int(sp.get("grad_accum", 1))
    ckpt = Checkpointer(checkpoint_dir, int(sp.get("checkpoint_every", 50)), fp, f"avgen_{stage}", writer=rank == 0)
    ds = zero.load_config(sp["deepspeed"], batch, accum, world) if sp.get("deepspeed") else None
    live = functools.partial(LiveLog, Path(live_dir), config=params, name=stage) if live_dir is not None else None
    return Trainer(f"avgen_{stage}", iters, ckpt, {"batch": g}, log_every=max(1, iters // 20),
                   deepspeed=ds, live=live, samples_per_step=batch * accum)


def _network(params: dict, init: Path | None, seed: int):
    """The previous stage's network; else local pretrained weights (``model.init``, a folder that
    ``AVGenNetwork.save_pretrained`` wrote, whose modules must be the preset's); else a fresh init."""
    from avgen.models.network import AVGenNetwork
    from avgen.models.presets import build, resolve

    if init is not None:
        log.info("continuing from %s", init)
        return AVGenNetwork.from_pretrained(init / "model"), f"previous stage {init.name}"
    pretrained = params["model"].get("init")
    if pretrained:
        net = AVGenNetwork.from_pretrained(pretrained)
        want = resolve(params["model"]["preset"])
        if {m: {k: c.get(k) for k in want[m]} for m, c in net.config.items()} != want:
            raise ValueError(f"params key 'model.init': {pretrained} holds another architecture than the "
                             f"'{params['model']['preset']}' preset (model.preset)")
        log.info("starting from the pretrained network %s", pretrained)
        return net, f"model.init {pretrained}"
    return build(params["model"]["preset"], seed=seed), "scratch"


def _train_data(features: Path, stage: str, sp: dict) -> tuple[object, dict]:
    from avgen.train.data import open_split
    from avgen.train.subset import select

    train = open_split(features, "train")
    if stage != "stage3":
        return train, {"train_size": len(train)}
    return select(train, sp["subset"])


def train_stage(stage: str, features: Path, out: Path, params: dict, checkpoint_dir: Path | None = None,
                init: Path | None = None, live_dir: Path | None = None, device: torch.device = torch.device("cpu")) -> dict | None:
    from avgen.train.data import load_split

    sp = stage_params(params, stage)
    world, rank = ddp.world()
    seed = int(sp.get("seed", 0))
    torch.manual_seed(seed)
    model, started_from = _network(params, init, seed)
    if sp.get("gradient_checkpointing"):
        model.enable_gradient_checkpointing()
    train, subset = _train_data(features, stage, sp)
    val = load_split(features, "val")
    n_params = sum(p.numel() for p in model.parameters())
    log.info("avgen %s: %s preset, %.3fM params, %d train / %d val clips, modalities %s", stage,
             params["model"]["preset"], n_params / 1e6, len(train), len(val), "/".join(MODALITIES[stage]))
    g = torch.Generator().manual_seed(seed)
    method = FlowMatching(model, _method_config(sp), g, device)
    inputs = sorted((features / "shards").glob("*/*.npy")) + (sorted(init.glob("model/*/*.safetensors")) if init else [])
    fp = fingerprint(f"avgen_{stage}", params, {f"{p.parent.name}/{p.name}": sha256_file(p) for p in inputs},
                     script_code_files("avgen_train"), world_size=world)
    trainer = _trainer(stage, sp, params, g, fp, checkpoint_dir, live_dir)
    before = val_losses(model, val, float(sp["shift"])) if rank == 0 and not trainer.resuming else None
    model.to(device)
    run = trainer.fit(method, batches(train, sp, stage, g), {"val_before": before})
    metrics = None
    with trainer.whole_weights(model):
        if rank == 0:
            model.to("cpu")
            info = {"stage": stage, "started_from": started_from, "n_params": n_params, "subset": subset,
                    "inputs": inputs, "val": len(val)}
            metrics = _finish(model, val, run, params, sp, info, features, out)
    ddp.barrier()
    return metrics


def _finish(model, val, run: Run, params: dict, sp: dict, info: dict, features: Path, out: Path) -> dict:
    after = val_losses(model, val, float(sp["shift"]))
    before = run.extra["val_before"]
    rows, k = run.rows, max(1, len(run.rows) // 10)
    metrics = {"stage": info["stage"], "iterations": int(sp["iterations"]), "lr": float(sp["lr"]),
               "params_millions": round(info["n_params"] / 1e6, 4), "train_clips": info["subset"]["train_size"],
               "val_clips": info["val"], "train_loss_first": round(sum(r["loss"] for _, r in rows[:k]) / k, 6),
               "train_loss_last": round(sum(r["loss"] for _, r in rows[-k:]) / k, 6),
               **{f"val_loss_before_{m}": v for m, v in before.items()},
               **{f"val_loss_after_{m}": v for m, v in after.items()}}
    if "subset_size" in info["subset"]:
        metrics["subset_size"] = info["subset"]["subset_size"]
    log.info("avgen %s: val loss %s -> %s", info["stage"], before, after)
    config = {"kind": "avgen", "stage": info["stage"], "preset": params["model"]["preset"], "shift": float(sp["shift"]),
              "started_from": info["started_from"], "features": read_json(features / "features.json"),
              "vocoder": params["model"]["vocoder"],
              "subset": {k: v for k, v in info["subset"].items() if k != "subset_ids"}}
    with atomic_path(out, directory=True) as tmp:
        model.save_pretrained(tmp / "model")
        write_json(tmp / "config.json", config)
        if "subset_ids" in info["subset"]:  # stage 3: which clips it fine-tuned on (one id a line)
            (tmp / "subset_ids.txt").write_text("".join(f"{i}\n" for i in info["subset"]["subset_ids"]))
        write_json(tmp / "metrics.json", metrics)
        write_csv(tmp / "loss.csv", ["step", "loss", "lr", "grad_norm"],
                  ([s, f"{r['loss']:.6f}", f"{r['lr']:.6e}", f"{r['grad_norm']:.6f}"] for s, r in run.rows))
        write_history(tmp / "dvclive", {f"train/{c}": [(s, r[c]) for s, r in rows] for c in FlowMatching.columns}, {},
                      {k: v for k, v in metrics.items() if isinstance(v, float)})
        write_manifest(tmp, f"avgen_{info['stage']}", params, info["inputs"], {"train_clips": metrics["train_clips"]},
                       extra={"metrics": metrics})
    return metrics


def main(argv=None) -> None:
    setup_logging(logging.INFO if ddp.launched_rank() == 0 else logging.WARNING)
    ap = parser("Train one AVGen stage (stage1 unimodal, stage2 joint, stage3 high-quality) on the features.")
    ap.add_argument("--stage", required=True, choices=STAGES)
    ap.add_argument("--features", required=True, type=Path, help="artifacts/avgen_features")
    ap.add_argument("--init", type=Path, default=None, help="the previous stage's artifact, to continue from")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gpus", type=int, default=0)
    ap.add_argument("--checkpoint-dir", type=Path, default=None)
    ap.add_argument("--live-dir", type=Path, default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, a.threads // max(1, ddp.launched_world())))
    device = ddp.init(a.gpus, f"avgen_{a.stage}")
    try:
        train_stage(a.stage, a.features, a.out, a.params, a.checkpoint_dir, a.init, a.live_dir, device)
    finally:
        ddp.shutdown()
