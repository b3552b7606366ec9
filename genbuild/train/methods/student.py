"""What the few-step distillation methods share (DMD2, MeanFlow): their common settings, the
pipeline's extra generator terms, and the EMA of the student.

Both methods train a student from a frozen teacher and save its EMA; keeping these pieces in one
place keeps a setting (``ema_decay``, ``seed``...) meaning the same thing in every method.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(kw_only=True)
class StudentConfig:
    steps: int                  # the student's sampling steps
    iterations: int
    lr: float
    cfg_scale: float            # the teacher's guidance, baked into the student
    shift: float
    batch_size: int = 4
    ema_decay: float = 0.9
    seed: int = 0
    param_prefix: str = ""      # where these params live, for errors (e.g. "distill.common.")


@dataclass
class GeneratorTerm:
    """One more term of the generator's loss: ``weight * fn(x0_gen, x0_true, cond)`` (a scalar)."""

    weight: float
    fn: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter."""
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm, 1 - decay)
