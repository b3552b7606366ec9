"""DeepSpeed ZeRO for the teacher: sharded optimiser state (stage 2) or parameters (stage 3).

At 14B the AdamW state alone (2 x 56 GB in fp32) does not fit beside the model on one GPU;
ZeRO partitions it over the ranks. ``teacher.deepspeed`` names a JSON config
(``configs/deepspeed/zero2.json`` / ``zero3.json``); the batch geometry in it is filled here
from the teacher's params so that one number means the same with and without DeepSpeed:
``batch_size`` samples per micro-step over all ranks, ``grad_accum`` micro-steps per update.

The job is still started by torchrun (rules/teacher.smk); DeepSpeed reads the same
environment. Checkpoints are DeepSpeed's own (each rank writes its shard of the optimiser
state) under ``<checkpoint-dir>/deepspeed/<tag>`` (tag ``step-<NNNNNNNN>-<fp16>``; DeepSpeed's
``latest`` file names the newest), with the loop's rows, RNG states and the run's fingerprint
as client state. Beside DeepSpeed's files, ``<tag>/fingerprint.json`` (written atomically by
rank 0 before DeepSpeed saves the tag) holds the fingerprint, so that ``resume`` compares it
*before* loading anything: a checkpoint of another fingerprint (or one without the sidecar,
e.g. made by older code) is never loaded into the engine, and the log says why.
"""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import torch

from genbuild.io.atomic import write_text

log = logging.getLogger(__name__)


def load_config(path: str | Path, batch: int, accum: int, world: int) -> dict:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"teacher.deepspeed: config '{p}' does not exist (see configs/deepspeed/)")
    cfg = json.loads(p.read_text())
    if batch % world:
        raise ValueError(f"teacher.batch_size {batch} does not split over {world} DeepSpeed ranks")
    cfg.update(train_micro_batch_size_per_gpu=batch // world, gradient_accumulation_steps=accum,
               train_batch_size=batch * accum, gradient_clipping=1.0)
    # fp32 master weights; ``bf16`` is applied by the Updater's autocast around the forward (as
    # without DeepSpeed), not by DeepSpeed's bf16 mode, which casts the weights but not the batches.
    cfg["bf16"] = {"enabled": False}
    cfg.pop("optimizer", None)  # the loop's AdamW, whose lr it schedules
    cfg.pop("scheduler", None)
    return cfg


def wrap(model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: dict):
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=cfg)
    log.info("DeepSpeed ZeRO stage %d: micro-batch %d per rank, %d accumulation steps",
             engine.zero_optimization_stage(), cfg["train_micro_batch_size_per_gpu"], cfg["gradient_accumulation_steps"])
    return engine


SIDECAR = "fingerprint.json"


def _tag(step: int, fp: str | None) -> str:
    """``step-<NNNNNNNN>-<fp16>``: runs of other fingerprints never share (and overwrite) a tag."""
    return f"step-{step:08d}-{fp[:16]}" if fp else f"step-{step:08d}"


def save(engine, directory: Path, step: int, client_state: dict) -> None:
    """Every rank calls this (each writes its shard). Rank 0 first writes the tag's fingerprint
    sidecar, so that ``latest`` never names a tag without one."""
    tag = _tag(step, client_state.get("fp"))
    if int(getattr(engine, "global_rank", 0)) == 0:
        doc = {"fp": client_state.get("fp"), "step": int(step), "tag": tag}
        write_text(Path(directory) / tag / SIDECAR, json.dumps(doc, sort_keys=True) + "\n")
    engine.save_checkpoint(str(directory), tag=tag, client_state=client_state)


def resume(engine, directory: Path, fp: str) -> dict | None:
    """The client state of the newest checkpoint of this run (same fingerprint), loaded into the engine.

    The fingerprint is read from the tag's sidecar first; a checkpoint of another run is not loaded."""
    directory = Path(directory)
    latest = directory / "latest"
    if not latest.is_file():
        return None
    tag = latest.read_text().strip()
    sidecar = directory / tag / SIDECAR
    try:
        theirs = json.loads(sidecar.read_text()).get("fp")
    except (OSError, ValueError, AttributeError) as e:
        log.warning("DeepSpeed checkpoint %s in %s not loaded: no readable fingerprint (%s: %s; made by "
                    "older code?): starting from step 0", tag, directory, SIDECAR, e)
        return None
    if theirs != fp:
        log.warning("DeepSpeed checkpoint %s in %s not loaded: it is of another run (fingerprint %s…, "
                    "this run %s…: other params, data, code or world size): starting from step 0",
                    tag, directory, str(theirs)[:16], fp[:16])
        return None
    path, state = engine.load_checkpoint(str(directory), tag=tag, load_optimizer_states=True,
                                         load_lr_scheduler_states=False)
    if path is None or not state:
        log.warning("DeepSpeed checkpoint %s in %s could not be loaded: starting from step 0", tag, directory)
        return None
    if state.get("fp") != fp:  # the sidecar matched but the client state does not: the engine holds foreign state
        raise RuntimeError(f"DeepSpeed checkpoint {tag} in {directory}: {SIDECAR} says fingerprint {fp[:16]}… "
                           f"but its client state says {str(state.get('fp'))[:16]}…; remove the directory")
    return state


def gathered(engine, model: torch.nn.Module):
    """A context in which the model holds its whole weights on every rank (ZeRO-3 keeps only a
    shard of each parameter); a no-op without DeepSpeed or below stage 3."""
    if engine is None or engine.zero_optimization_stage() < 3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)
