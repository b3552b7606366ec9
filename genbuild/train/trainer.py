"""The training loop, written once for every method and every pipeline.

A method (``genbuild.train.methods``) does one update per call; the ``Trainer`` does the rest:

- resume: the newest checkpoint of this run's fingerprint (``genbuild.train.checkpoint``), or
  under DeepSpeed the engine's own (``genbuild.train.zero``), restores the method, every RNG
  (torch, CUDA, Python, NumPy and the loop's named generators), the loss rows, the evaluations
  and the caller's extra loop state, so a resumed run ends with the same bytes on CPU;
- periodic checkpoints of all of that, the per-step log line, the DVCLive live log (rank 0),
  the periodic evaluation hook (rank 0; its rows and animations become part of the run);
- data parallelism: the checkpoint found by rank 0 is the one every rank resumes, and the loop
  ends at a barrier. Gradient accumulation, precision and the DeepSpeed update are the
  method's business through ``genbuild.train.optim.Updater``.

It knows nothing of a pipeline: data come from a callable, the evaluation is a callable, the
artifact is written by the caller from the returned ``Run``.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genbuild.media import gif_bytes
from genbuild.train import distributed as ddp
from genbuild.train import zero
from genbuild.train.checkpoint import Checkpointer, rng_state, set_rng_state
from genbuild.train.methods.base import Method

log = logging.getLogger(__name__)

# evaluate(step) -> (row of scores with a "step" key, frames of the animation to keep)
Evaluate = Callable[[int], tuple[dict, list[np.ndarray]]]


@dataclass
class Run:
    """What the loop leaves for the artifact: every row since step 0 (resumed ones included)."""

    start: int                                   # the step this process started at (0 unless resumed)
    rows: list[tuple[int, dict[str, float]]]     # (step, the method's losses)
    evals: list[dict] = field(default_factory=list)
    media: dict[str, bytes] = field(default_factory=dict)  # eval/<name>.gif -> bytes
    extra: dict = field(default_factory=dict)    # the caller's loop state (e.g. the validation loss before)
    seconds: float = 0.0                         # wall time of this process's steps (logs only)


class Trainer:
    """Runs ``iterations`` steps of a method with checkpoints, logs and evaluations.

    ``generators``: the loop's named RNGs (e.g. the batch generator) that checkpoints keep.
    ``deepspeed``: a DeepSpeed config (``zero.load_config``) to hand the update to the engine;
    its checkpoints go to ``<checkpoint dir>/deepspeed``. ``live``: opens the run's live log
    (``genbuild.train.tracking.LiveLog``) given whether the run resumes. ``samples_per_step``:
    for the live throughput. ``unit``: what the progress line calls a step ("<name> <unit> i/n").
    """

    def __init__(self, name: str, iterations: int, checkpointer: Checkpointer, generators: dict[str, torch.Generator],
                 *, log_every: int = 1, deepspeed: dict | None = None, live: Callable[[bool], Any] | None = None,
                 evaluate: Evaluate | None = None, eval_every: int = 0, samples_per_step: int = 1, unit: str = "step"):
        self.name, self.iterations, self.ckpt, self.generators = name, int(iterations), checkpointer, generators
        self.log_every, self.deepspeed, self.live_factory = max(1, int(log_every)), deepspeed, live
        self.evaluate, self.eval_every, self.samples_per_step = evaluate, int(eval_every), samples_per_step
        self.unit = unit
        self.rank = ddp.world()[1]
        self.engine = None
        self.found = None  # the plain checkpoint to resume (a DeepSpeed one is known after wrapping)
        if checkpointer.enabled and deepspeed is None:
            path = checkpointer.find() if self.rank == 0 else None
            self.found = ddp.broadcast_from_rank0(str(path) if path else None)

    @property
    def resuming(self) -> bool:
        """Whether a plain checkpoint will be resumed: what the caller may skip computing (a value
        the checkpoint's extra state holds). DeepSpeed checkpoints are found only in ``fit``."""
        return self.found is not None

    @property
    def _ds_dir(self) -> Path | None:
        return self.ckpt.directory / "deepspeed" if self.ckpt.directory else None

    def whole_weights(self, module: torch.nn.Module):
        """A context in which ``module`` holds its whole weights on every rank (ZeRO-3 shards them)."""
        return zero.gathered(self.engine, module)

    def _restore(self, method: Method, extra: dict) -> Run:
        """Wrap DeepSpeed if asked, then load the checkpoint to resume into the method and the RNGs."""
        state, found = None, self.found
        if self.deepspeed is not None:
            self.engine = method.use_deepspeed(self.deepspeed)
            state = zero.resume(self.engine, self._ds_dir, self.ckpt.fp) if self.ckpt.enabled else None
            found = f"{self._ds_dir} (DeepSpeed)" if state else None
        elif found:
            state = Checkpointer.load(found)  # on the CPU: RNG states must be CPU tensors
            method.load_state_dict(state["method"])
        if state:
            set_rng_state(state["rng"], self.generators)
            run = Run(int(state["step"]), [(int(s), dict(r)) for s, r in state["rows"]], list(state["evals"]),
                      dict(state["media"]), dict(state["extra"]))
            log.info("%s: resuming from step %d of %d (checkpoint %s)", self.name, run.start, self.iterations, found)
            return run
        if self.ckpt.enabled:
            log.info("%s: no checkpoint to resume in %s: starting from step 0 (checkpoint every %d steps)",
                     self.name, self.ckpt.directory, self.ckpt.every)
        return Run(0, [], extra=dict(extra))

    def fit(self, method: Method, data: Callable[[int], Callable[[], Any]], extra: dict | None = None) -> Run:
        """Train from the resumed step to the end. ``data(start)`` gives the batch source
        (``next_batch``) of a run starting at ``start``; ``extra``: loop state to checkpoint
        with the run (replaced by the checkpoint's when resuming)."""
        run = self._restore(method, extra or {})
        live = self.live_factory(run.start > 0) if self.live_factory is not None and self.rank == 0 else None
        next_batch = data(run.start)
        t0 = tick = time.time()
        for step in range(run.start, self.iterations):
            row = method.train_step(step, next_batch)
            run.rows.append((step, row))
            if live is not None:
                now = time.time()
                live.log(step, {**{f"train/{c}": row[c] for c in method.columns},
                                "perf/samples_per_s": self.samples_per_step / max(now - tick, 1e-9)})
                tick = now
            if step % self.log_every == 0 or step == self.iterations - 1:
                log.info("%s %s %d/%d %s", self.name, self.unit, step + 1, self.iterations,
                         " ".join(f"{c} {row[c]:.4g}" for c in method.columns))
            self._maybe_evaluate(step, run, live)
            if self.ckpt.due(step + 1, self.iterations):
                self._save(method, step + 1, run)
        run.seconds = time.time() - t0
        if live is not None:
            live.close()
        ddp.barrier()
        return run

    def _maybe_evaluate(self, step: int, run: Run, live) -> None:
        """Every ``eval_every`` steps and after the last: score, keep the row and the animation."""
        if self.evaluate is None or self.rank != 0 or not self.eval_every:
            return
        if (step + 1) % self.eval_every and step != self.iterations - 1:
            return
        row, frames = self.evaluate(step + 1)
        run.evals.append(row)
        name = f"eval/sample_step{step + 1:06d}.gif"
        run.media[name] = gif_bytes(frames)
        log.info("%s eval at step %d: %s", self.name, step + 1,
                 ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "step"))
        if live is not None:
            live.log(step, {f"eval/{k}": v for k, v in row.items() if k != "step"})
            live.image(step, name, run.media[name])

    def _save(self, method: Method, done: int, run: Run) -> None:
        loop_state = {"rng": rng_state(self.generators), "rows": run.rows, "evals": run.evals, "media": run.media,
                      "extra": run.extra, "step": done}
        if self.engine is not None:  # every rank writes its shard of the optimiser state
            zero.save(self.engine, self._ds_dir, done, {**loop_state, "fp": self.ckpt.fp})
        else:
            self.ckpt.save(done, {"method": method.state_dict(), **loop_state})
