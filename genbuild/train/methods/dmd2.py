"""DMD2 at any scale: a few-step generator distilled from a frozen teacher.

Roles, as the public DMD2 codebases converge on them:
- generator (the student): k-step sampler; trained with the distribution-matching gradient,
  using backward simulation (run the student's own first i steps without gradient, then
  predict x0 with gradient at step i);
- real score: the frozen teacher with classifier-free guidance (standard convention
  uncond + w (cond - uncond)), so guidance is baked into the student;
- fake score: a trainable copy of the teacher that tracks the generator's distribution
  with the flow-matching loss, updated ``critic_steps`` times per generator update.
The DMD gradient is normalised per sample by mean |x0_gen - x0_real|. An optional
regression term pulls the student's x0 towards the ground-truth edit (the dataset has it).

Data-parallel (``genbuild.train.distributed``): ``step`` takes the global batch; every random draw
is made at the global batch size from the same generator and then cut to this rank's share,
both losses are weighted by that share, and the generator's and the fake score's gradients
are summed over ranks before their optimisers step (``genbuild.train.optim.Updater``), so every
rank holds the same three networks. Random draws stay on the CPU (the generator is a CPU one)
and move to the device.

As a ``genbuild.train.methods.base.Method``, ``train_step`` takes one global batch from the
trainer's data source and does one ``step``; conditions are any
``genbuild.train.conditioning.Conditioning``.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from genbuild.train import distributed as ddp
from genbuild.train.conditioning import Conditioning
from genbuild.train.flow import (
    call_model,
    flow_matching_loss,
    guided_velocity,
    noisy,
    sample,
    sample_sigmas,
    sigma_schedule,
    x0_from_velocity,
)
from genbuild.train.methods.base import Method
from genbuild.train.optim import Updater

log = logging.getLogger(__name__)


@dataclass
class DMDConfig:
    steps: int
    iterations: int
    lr: float
    fake_lr: float
    cfg_scale: float
    critic_steps: int
    regression_weight: float
    shift: float
    batch_size: int = 4
    ema_decay: float = 0.9
    seed: int = 0
    guidance_convention: str = "standard"
    param_prefix: str = ""  # where these params live, for errors (e.g. "distill.common.")

    def __post_init__(self):
        if self.guidance_convention != "standard":
            raise ValueError(f"{self.param_prefix}guidance_convention: only 'standard' (uncond + w(cond-uncond)) "
                             "is implemented")


class DMD2(Method):
    """Owns the three networks and their losses; ``step`` does one generator update."""

    columns = ("dmd", "regression", "critic")

    def __init__(self, generator, teacher, cfg: DMDConfig):
        self.cfg = cfg
        self.generator = generator.train()
        self.teacher = teacher.eval().requires_grad_(False)
        self.fake = copy.deepcopy(teacher).train().requires_grad_(True)
        self.ema = copy.deepcopy(generator).eval().requires_grad_(False)
        self.generator_params = [p for p in self.generator.parameters() if p.requires_grad]
        self.fake_params = [p for p in self.fake.parameters() if p.requires_grad]
        self.opt_g = torch.optim.AdamW(self.generator.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.0, 0.99))
        self.opt_f = torch.optim.AdamW(self.fake.parameters(), lr=cfg.fake_lr, weight_decay=0.0, betas=(0.0, 0.99))
        self.device = next(generator.parameters()).device
        self.update_g = Updater(self.generator, self.opt_g, self.device, params=self.generator_params)
        self.update_f = Updater(self.fake, self.opt_f, self.device, params=self.fake_params)
        self.sigmas = sigma_schedule(cfg.steps, cfg.shift).to(self.device)
        self.g = torch.Generator().manual_seed(cfg.seed)
        self.mine, self.full = slice(None), 0  # this rank's share of the current global batch

    def _randn(self, shape) -> torch.Tensor:
        return torch.randn((self.full, *shape[1:]), generator=self.g)[self.mine].to(self.device)

    def _sigmas(self) -> torch.Tensor:
        return sample_sigmas(self.full, self.cfg.shift, self.g)[self.mine].to(self.device)

    # -- checkpoints: everything ``step`` reads or changes, so a resumed run continues exactly --
    def state_dict(self) -> dict:
        return {"generator": self.generator.state_dict(), "fake": self.fake.state_dict(), "ema": self.ema.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_f": self.opt_f.state_dict(), "noise_rng": self.g.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.fake.load_state_dict(state["fake"])
        self.ema.load_state_dict(state["ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_f.load_state_dict(state["opt_f"])
        self.g.set_state(state["noise_rng"])

    def _simulate(self, cond: Conditioning, shape) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the student from noise for a random number i < k of its steps; return (x at s_i, s_i)."""
        i = int(torch.randint(0, self.cfg.steps, (1,), generator=self.g))
        x = self._randn(shape)
        with torch.no_grad():
            for j in range(i):
                v = call_model(self.generator, x, self.sigmas[j], cond)
                x = x + (self.sigmas[j + 1] - self.sigmas[j]) * v
        return x, self.sigmas[i]

    def _generate(self, x: torch.Tensor, s: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return x0_from_velocity(x, call_model(self.generator, x, s, cond), s)

    def critic_loss(self, x0_gen: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        sigma = self._sigmas()
        noise = self._randn(x0_gen.shape)
        return flow_matching_loss(self.fake, x0_gen.detach(), cond, sigma, noise)

    def dmd_loss(self, x0_gen: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        tau = self._sigmas().clamp(0.02, 0.98)
        x_tau = noisy(x0_gen.detach(), self._randn(x0_gen.shape), tau)
        with torch.no_grad():
            x0_real = x0_from_velocity(x_tau, guided_velocity(self.teacher, x_tau, tau, cond, self.cfg.cfg_scale), tau)
            x0_fake = x0_from_velocity(x_tau, call_model(self.fake, x_tau, tau, cond), tau)
            weight = (x0_gen.detach() - x0_real).abs().mean(dim=tuple(range(1, x0_gen.ndim)), keepdim=True).clamp_min(1e-6)
            grad = (x0_fake - x0_real) / weight
        return 0.5 * F.mse_loss(x0_gen, (x0_gen - grad).detach())

    def train_step(self, step: int, next_batch: Callable[[], Any]) -> dict[str, float]:
        x0_true, cond = next_batch()
        return self.step(x0_true, cond)

    def step(self, x0_true: torch.Tensor, cond: Conditioning) -> dict:
        """One generator update (after ``critic_steps`` fake-score updates) on a global batch."""
        self.full = len(x0_true)
        self.mine = ddp.share(self.full, f"{self.cfg.param_prefix}batch_size")
        frac = (self.mine.stop - self.mine.start) / self.full  # 1.0 in one process: the same arithmetic
        x0_true, cond = x0_true[self.mine].to(self.device), cond.select(self.mine).to(self.device)
        x, s = self._simulate(cond, x0_true.shape)
        # Critic (fake score) updates on the current generator's samples.
        with torch.no_grad():
            x0_sample = self._generate(x, s, cond)
        for _ in range(self.cfg.critic_steps):
            loss_f = self.critic_loss(x0_sample, cond) * frac
            self.update_f.zero_grad()
            self.update_f.backward(loss_f)
            self.update_f.step()
        critic = ddp.allreduce_sum(loss_f).item()  # the last critic step's loss, for the log
        # Generator update.
        x0_gen = self._generate(x, s, cond)
        loss_dmd = self.dmd_loss(x0_gen, cond) * frac
        loss_reg = (F.mse_loss(x0_gen, x0_true) * frac if self.cfg.regression_weight > 0
                    else torch.zeros((), device=self.device))
        loss = loss_dmd + self.cfg.regression_weight * loss_reg
        self.update_g.zero_grad()
        self.update_g.backward(loss)
        self.update_g.step()
        with torch.no_grad():
            for pe, pg in zip(self.ema.parameters(), self.generator.parameters()):
                pe.lerp_(pg, 1 - self.cfg.ema_decay)
        return {"dmd": ddp.allreduce_sum(loss_dmd).item(), "regression": ddp.allreduce_sum(loss_reg).item(),
                "critic": critic, "sim_sigma": float(s)}


@torch.no_grad()
def few_step_mse(model, x0: torch.Tensor, cond: Conditioning, steps: int, shift: float, cfg_scale: float = 1.0,
                 seed: int = 11) -> float:
    """MSE between k-step samples and the ground-truth latents from fixed noise: the gate metric."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=g)
    out = sample(model.eval(), cond, noise, steps, shift, cfg_scale)
    return F.mse_loss(out, x0).item()
