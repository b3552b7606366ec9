"""What a training method is to the trainer: one update at a time, and a state to checkpoint.

The loop (``genbuild.train.trainer.Trainer``) is written once; a method owns its networks,
optimisers (through ``genbuild.train.optim.Updater``) and losses. Splitting there keeps the
resume, logging, evaluation and distribution code out of every objective, and lets a new
objective (flow matching, DMD2, ...) be a class of its own beside the others.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any


class Method(ABC):
    #: the loss-row keys the trainer logs each step (a method may return more, e.g. diagnostics)
    columns: tuple[str, ...] = ()

    @abstractmethod
    def train_step(self, step: int, next_batch: Callable[[], Any]) -> dict[str, float]:
        """One optimiser update at ``step`` (0-based), drawing its data with ``next_batch()`` (once
        per micro-batch); the row of losses to log (python floats, equal on every rank)."""

    @abstractmethod
    def state_dict(self) -> dict:
        """Everything ``train_step`` reads or changes besides the trainer's generators, so that a
        resumed run continues exactly (networks, optimisers, EMA, the method's own RNGs)."""

    @abstractmethod
    def load_state_dict(self, state: dict) -> None:
        ...

    def use_deepspeed(self, config: dict):
        """Hand the update to a DeepSpeed engine (``genbuild.train.zero``); returns the engine, which
        then checkpoints the networks and optimiser state itself."""
        raise ValueError(f"{type(self).__name__} does not train under DeepSpeed")
