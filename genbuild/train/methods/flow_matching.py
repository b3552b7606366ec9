"""Flow matching (Wan's objective) as a training method: how a teacher learns to denoise.

One update = ``grad_accum`` micro-batches of ``batch_size`` samples whose gradients add up:
per micro-batch the data source picks the samples, then the batch generator draws the CFG
dropout (``cond_dropout``: the conditions' ``drop``), the noise levels and the noise, in this
order (``genbuild.train.flow.noise_batch``); the learning rate follows a linear warm-up and a
cosine decay. Data-parallel: every rank draws the whole global micro-batch from the same
generator and trains on its contiguous share, its loss weighted by that share (the update is
the whole batch's, ``genbuild.train.optim``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from genbuild.train import distributed as ddp
from genbuild.train.flow import flow_matching_loss, noise_batch
from genbuild.train.methods.base import Method
from genbuild.train.optim import Updater, warmup_cosine


@dataclass
class FlowMatchingConfig:
    iterations: int
    batch_size: int
    lr: float
    warmup: int
    cond_dropout: float
    shift: float
    grad_accum: int = 1
    bf16: bool = False              # autocast; weights and optimiser state stay fp32
    batch_param: str = "batch_size"  # the param's name in errors (e.g. teacher.batch_size)
    # Per-element loss weights from a micro-batch's conditions (None: the plain mean), e.g. a
    # pipeline weighting one region of the latents against the rest.
    loss_weight: Callable[[Any], torch.Tensor] | None = None


class FlowMatching(Method):
    """Trains ``model`` (its parameters that require grad) with AdamW on the flow-matching loss.

    ``generator`` is the loop's batch generator (the trainer checkpoints it); ``next_batch()``
    returns (x0, conditions) of one global micro-batch on the CPU.
    """

    columns = ("loss", "lr", "grad_norm")

    def __init__(self, model: torch.nn.Module, cfg: FlowMatchingConfig, generator: torch.Generator,
                 device: str | torch.device = "cpu"):
        self.model, self.cfg, self.g = model, cfg, generator
        self.device = torch.device(device)
        self.mine = ddp.share(cfg.batch_size, cfg.batch_param)  # this rank's share of every micro-batch
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=0.0)
        self.updater = Updater(model, self.optimizer, self.device, cfg.bf16, params=trainable)

    def use_deepspeed(self, config: dict):
        return self.updater.use_deepspeed(config)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def _micro_batch(self, next_batch: Callable[[], Any]):
        """(x0, cond, sigma, noise): this rank's share of one micro-batch, on the device."""
        cfg, mine = self.cfg, self.mine
        x0, cond = next_batch()
        x0, cond, sigma, noise = noise_batch(x0, cond, cfg.cond_dropout, cfg.shift, self.g)
        if ddp.world()[0] > 1:
            x0, sigma, noise, cond = x0[mine], sigma[mine], noise[mine], cond.select(mine)
        if self.device.type != "cpu":
            x0, sigma, noise, cond = x0.to(self.device), sigma.to(self.device), noise.to(self.device), cond.to(self.device)
        return x0, cond, sigma, noise

    def train_step(self, step: int, next_batch: Callable[[], Any]) -> dict[str, float]:
        cfg, up = self.cfg, self.updater
        up.set_lr(cfg.lr * warmup_cosine(step, cfg.iterations, cfg.warmup))
        up.zero_grad()
        loss = torch.zeros((), device=self.device)
        for _ in range(cfg.grad_accum):  # micro-batches of batch_size; their gradients add up before the update
            x0, cond, sigma, noise = self._micro_batch(next_batch)
            with up.autocast():
                weight = cfg.loss_weight(cond) if cfg.loss_weight is not None else None
                micro = flow_matching_loss(self.model, x0, cond, sigma, noise, weight)
            loss = loss + up.backward(micro, (self.mine.stop - self.mine.start) / cfg.batch_size / cfg.grad_accum)
        loss = ddp.allreduce_sum(loss)
        gnorm = up.step()
        return {"loss": loss.item(), "lr": up.lr, "grad_norm": float(gnorm)}
