"""One optimiser's update, written once for every method: precision, data parallelism, DeepSpeed.

A method (``genbuild.train.methods``) computes losses; how their gradients become an update is
the same for all of them and lives here, so the data-parallel, DeepSpeed and bf16 code exists
once:

- plain (one process or ``torch.distributed.run``): each rank backpropagates its loss weighted
  by its share of the global batch, the gradients are summed over ranks
  (``genbuild.train.distributed``), clipped to norm 1.0 over the module's parameters, and the
  optimiser steps;
- DeepSpeed ZeRO (``genbuild.train.zero``): the engine weights the micro-batches (1/accum, mean
  over ranks), clips (its config's ``gradient_clipping``) and steps at the accumulation boundary;
- bf16: autocast around the forward pass (weights and optimiser state stay fp32), under
  DeepSpeed too: its own bf16 mode would cast the weights to bf16 while the batches stay fp32
  (a dtype mismatch in the first matmul), so genbuild.train.zero leaves it off.
"""
from __future__ import annotations

import math

import torch

from genbuild.train import distributed as ddp
from genbuild.train import zero


def warmup_cosine(step: int, total: int, warmup: int, floor: float = 0.1) -> float:
    """LR multiplier: linear warm-up, then cosine decay to ``floor``."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    p = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))


class Updater:
    """The update of ``module``'s trainable parameters by ``optimizer``.

    ``params``: what the optimiser trains (the gradients summed over ranks); by default the
    module's parameters that require grad. Clipping runs over all of ``module.parameters()``
    (those without a gradient do not count), as ``clip_grad_norm_`` is usually called.
    """

    def __init__(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, device: str | torch.device = "cpu",
                 bf16: bool = False, params: list[torch.nn.Parameter] | None = None, max_norm: float = 1.0):
        self.module, self.optimizer, self.device = module, optimizer, torch.device(device)
        self.bf16, self.max_norm = bool(bf16), max_norm
        self.params = params if params is not None else [p for p in module.parameters() if p.requires_grad]
        self.engine = None  # a DeepSpeed engine once ``use_deepspeed`` wrapped the module

    def use_deepspeed(self, config: dict):
        """Wrap the module and optimiser in a DeepSpeed engine (after the module moved to its device)."""
        self.engine = zero.wrap(self.module, self.optimizer, config)
        return self.engine

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def autocast(self):
        """The forward pass's precision context: bf16 autocast when asked (with or without DeepSpeed)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def backward(self, loss: torch.Tensor, share: float | None = None) -> torch.Tensor:
        """Backpropagate ``loss``; returns what it contributes to the logged loss (detached).

        ``share`` (this rank's fraction of the global batch, divided by the accumulation steps)
        weights a micro-batch's unweighted loss; ``None``: ``loss`` is weighted already. Under
        DeepSpeed the engine weights the unweighted loss itself and steps at the accumulation
        boundary, so the engine is given ``loss`` as it is.
        """
        weighted = loss if share is None else loss.float() * share
        if self.engine is not None:
            self.engine.backward(loss if share is None else loss.float())
            self.engine.step()
        else:
            weighted.backward()
        return weighted.detach()

    def step(self):
        """Sum gradients over ranks, clip, step; the gradient norm before clipping (a tensor, or
        the engine's float, NaN when DeepSpeed does not report it)."""
        if self.engine is not None:
            gnorm = self.engine.get_global_grad_norm()  # clipped by the config's gradient_clipping
            return float("nan") if gnorm is None else gnorm
        for p in self.params:  # unused in this step (AVGen's unimodal batches): a zero gradient, as across
            if p.grad is None:  # ranks and in DeepSpeed's flat partitions, so every launch updates alike
                p.grad = torch.zeros_like(p)
        ddp.allreduce_grads(self.params)
        gnorm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.max_norm)
        self.optimizer.step()
        return gnorm

