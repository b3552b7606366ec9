"""DeepSpeed ZeRO for the teacher: sharded optimiser state (stage 2) or parameters (stage 3).

At 14B the AdamW state alone (2 x 56 GB in fp32) does not fit beside the model on one GPU;
ZeRO partitions it over the ranks. ``teacher.deepspeed`` names a JSON config
(``configs/deepspeed/zero2.json`` / ``zero3.json``); the batch geometry in it is filled here
from the teacher's params so that one number means the same with and without DeepSpeed:
``batch_size`` samples per micro-step over all ranks, ``grad_accum`` micro-steps per update.

The job is still started by torchrun (rules/teacher.smk); DeepSpeed reads the same
environment. Checkpoints are DeepSpeed's own (each rank writes its shard of the optimiser
state) under ``<checkpoint-dir>/deepspeed``, with the loop's rows, RNG states and the run's
fingerprint as client state; a checkpoint of another fingerprint is not resumed.
"""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def load_config(path: str | Path, batch: int, accum: int, world: int, bf16: bool) -> dict:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"teacher.deepspeed: config '{p}' does not exist (see configs/deepspeed/)")
    cfg = json.loads(p.read_text())
    if batch % world:
        raise ValueError(f"teacher.batch_size {batch} does not split over {world} DeepSpeed ranks")
    cfg.update(train_micro_batch_size_per_gpu=batch // world, gradient_accumulation_steps=accum,
               train_batch_size=batch * accum, gradient_clipping=1.0)
    cfg["bf16"] = {"enabled": bool(bf16)}
    cfg.pop("optimizer", None)  # the loop's AdamW, whose lr it schedules
    cfg.pop("scheduler", None)
    return cfg


def wrap(model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: dict):
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=cfg)
    log.info("DeepSpeed ZeRO stage %d: micro-batch %d per rank, %d accumulation steps",
             engine.zero_optimization_stage(), cfg["train_micro_batch_size_per_gpu"], cfg["gradient_accumulation_steps"])
    return engine


def save(engine, directory: Path, step: int, client_state: dict) -> None:
    """Every rank calls this (each writes its shard)."""
    engine.save_checkpoint(str(directory), tag=f"step-{step:08d}", client_state=client_state)


def resume(engine, directory: Path, fp: str) -> dict | None:
    """The client state of the newest checkpoint of this run (same fingerprint), loaded into the engine."""
    if not (Path(directory) / "latest").is_file():
        return None
    path, state = engine.load_checkpoint(str(directory), load_optimizer_states=True, load_lr_scheduler_states=False)
    if path is None or not state or state.get("fp") != fp:
        log.info("DeepSpeed checkpoint in %s is of another run: starting from step 0", directory)
        return None
    return state


def gathered(engine, model: torch.nn.Module):
    """A context in which the model holds its whole weights on every rank (ZeRO-3 keeps only a
    shard of each parameter); a no-op without DeepSpeed or below stage 3."""
    if engine is None or engine.zero_optimization_stage() < 3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)
