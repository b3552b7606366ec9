"""MeanFlow distillation: a few-step student that learns the teacher's mean velocity over a step.

MeanFlow (Geng et al., 2025) trains u(z_t, r, t), the average velocity over [r, t], with the
identity that links it to the instantaneous velocity v:

    u(z_t, r, t) = v(z_t, t) - (t - r) * d/dt u(z_t, r, t),   d/dt = v . d/dz + d/dt (along the flow)

so a sampler can jump z_r = z_t - (t - r) u(z_t, r, t) in one call, whatever the step's length.
From scratch v is the data's conditional velocity (noise - x0); here v is the frozen teacher's
guided velocity, so the student learns the teacher's flow (with its guidance baked in) and, at
r = t, reproduces the teacher exactly.

Why this method beside DMD2 (``genbuild.train.methods.dmd2``): one network and no critic (DMD2
trains a fake score and a discriminator head beside the student), one loss with no adversarial
balance to tune, and any step count from the same weights. rCM needs a JVP through the network
with forward-mode autodiff and a second (sCM) objective; MeanFlow's target is under
stop-gradient, so its total derivative is taken here by a central finite difference along
(v, 1) with two extra forward passes (no forward-mode AD: CPU attention kernels lack it, and
the difference is exact to O(eps^2)).

The pipeline's own terms (``terms``: background preservation, identity, regression to the
ground truth...) can act on the student's one-jump x0, as DMD2's do on its generator's.

One update: draw t >= r (a ``flow_ratio`` share with r = t, plain velocity matching; a
``schedule_ratio`` share on the student's own k-step intervals, the only jumps it makes), noise the
ground-truth latents to z_t, take the teacher's v and the target under no_grad, regress the
student's u on it with MeanFlow's adaptive weight 1 / (||err||^2 + c)^p, and update the EMA.
Data-parallel like DMD2: every draw is made at the global batch size from one generator and
cut to this rank's share, whose loss is weighted by that share.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from genbuild.train import distributed as ddp
from genbuild.train.conditioning import Conditioning
from genbuild.train.cost import PassCounter
from genbuild.train.flow import call_model, guided_velocity, noisy, sample_sigmas, sigma_schedule, x0_from_velocity
from genbuild.train.methods.base import Method
from genbuild.train.methods.student import GeneratorTerm, StudentConfig, update_ema
from genbuild.train.optim import Updater


@dataclass(kw_only=True)
class MeanFlowConfig(StudentConfig):
    flow_ratio: float = 0.5      # share of draws with r = t (the teacher's instantaneous velocity)
    schedule_ratio: float = 0.0  # share of draws that are one of the student's own ``steps`` intervals
    adaptive_p: float = 1.0      # MeanFlow's adaptive loss weight power (0: plain MSE)
    adaptive_c: float = 1e-3
    fd_eps: float = 1e-3         # finite-difference step of the total derivative, in noise-level units

    def __post_init__(self):
        if not 0.0 <= self.flow_ratio <= 1.0:
            raise ValueError(f"{self.param_prefix}flow_ratio: {self.flow_ratio} is not in [0, 1]")
        if not 0.0 <= self.schedule_ratio <= 1.0 - self.flow_ratio:
            raise ValueError(f"{self.param_prefix}schedule_ratio: {self.schedule_ratio} is not in [0, 1 - flow_ratio]")
        if not 0.0 < self.fd_eps < 0.01:
            raise ValueError(f"{self.param_prefix}fd_eps: {self.fd_eps} is not in (0, 0.01)")


def total_derivative(model, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, v: torch.Tensor,
                     cond: Conditioning, eps: float) -> torch.Tensor:
    """d/dt u(z_t, r, t) along the flow (dz/dt = v), by a central difference: (u(z + eps v, r, t + eps)
    - u(z - eps v, r, t - eps)) / (2 eps). ``t`` must lie in [eps, 1 - eps]."""
    e = torch.full_like(t, eps)
    ev = e.view(-1, *([1] * (z.ndim - 1)))
    ahead = call_model(model, z + ev * v, t + e, cond, t + e - r)
    behind = call_model(model, z - ev * v, t - e, cond, t - e - r)
    return (ahead - behind) / (2 * eps)


class MeanFlow(Method):
    """Owns the student, its EMA and its optimiser; the teacher is frozen. ``terms``: the pipeline's
    extra terms (``GeneratorTerm``, as DMD2 takes them) on the student's one-jump x0 from z_t,
    x0 = z_t - t u(z_t, 0, t), against the ground truth and the conditions."""

    def __init__(self, student, teacher, cfg: MeanFlowConfig, terms: dict[str, GeneratorTerm] | None = None):
        if not getattr(student, "average_velocity", False):
            raise ValueError("MeanFlow needs a student with an interval input (average_velocity)")
        self.cfg = cfg
        self.terms = {name: t for name, t in (terms or {}).items() if t.weight > 0}
        self.columns = ("loss", "mse", "interval_mse", *self.terms)
        self.generator = student.train()
        self.teacher = teacher.eval().requires_grad_(False)
        self.ema = copy.deepcopy(student).eval().requires_grad_(False)
        params = [p for p in student.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.99))
        self.device = next(student.parameters()).device
        self.update = Updater(student, self.opt, self.device, params=params)
        self.g = torch.Generator().manual_seed(cfg.seed)
        self.passes = PassCounter(self.generator, self.teacher)
        self.schedule = sigma_schedule(cfg.steps, cfg.shift)

    def state_dict(self) -> dict:
        return {"generator": self.generator.state_dict(), "ema": self.ema.state_dict(),
                "opt": self.opt.state_dict(), "noise_rng": self.g.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.g.set_state(state["noise_rng"])

    def draw_times(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, r) for ``n`` samples: two shifted-uniform levels sorted t >= r; r = t for a
        ``flow_ratio`` share; one of the student's own sampling steps (s_i, s_i+1) for a
        ``schedule_ratio`` share (the jumps it will be asked to make); t kept in [2 eps, 1 - eps]
        for the finite difference."""
        cfg = self.cfg
        a, b = sample_sigmas(n, cfg.shift, self.g), sample_sigmas(n, cfg.shift, self.g)
        t, r = torch.maximum(a, b), torch.minimum(a, b)
        u = torch.rand(n, generator=self.g)
        i = torch.randint(0, cfg.steps, (n,), generator=self.g)
        own = (u >= cfg.flow_ratio) & (u < cfg.flow_ratio + cfg.schedule_ratio)
        t, r = torch.where(own, self.schedule[i], t), torch.where(own, self.schedule[i + 1], r)
        t = t.clamp(2 * cfg.fd_eps, 1 - cfg.fd_eps)
        return t, torch.where(u < cfg.flow_ratio, t, r.clamp(max=t))

    def target(self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The stop-gradient target v - (t - r) du/dt, v the teacher's guided velocity."""
        with torch.no_grad():
            v = guided_velocity(self.teacher, z, t, cond, self.cfg.cfg_scale)
            dudt = total_derivative(self.generator, z, r, t, v, cond, self.cfg.fd_eps)
            return v - (t - r).view(-1, *([1] * (z.ndim - 1))) * dudt

    def loss(self, x0: torch.Tensor, cond: Conditioning, t, r, noise) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(adaptively weighted MeanFlow loss, per-sample squared error, the extra terms unweighted) of one batch."""
        z = noisy(x0, noise, t)
        goal = self.target(z, r, t, cond)
        err = ((call_model(self.generator, z, t, cond, t - r) - goal) ** 2).flatten(1).mean(1)
        weight = 1.0 / (err.detach() + self.cfg.adaptive_c) ** self.cfg.adaptive_p
        extra = {}
        if self.terms:
            x0_gen = x0_from_velocity(z, call_model(self.generator, z, t, cond, t), t)
            extra = {name: term.fn(x0_gen, x0, cond) for name, term in self.terms.items()}
        return (weight * err).mean(), err.detach(), extra

    def train_step(self, step: int, next_batch: Callable[[], Any]) -> dict[str, float]:
        self.passes.reset()
        x0, cond = next_batch()
        full = len(x0)
        mine = ddp.share(full, f"{self.cfg.param_prefix}batch_size")  # this rank's share of the global batch
        frac = (mine.stop - mine.start) / full
        t, r = self.draw_times(full)
        noise = torch.randn(x0.shape, generator=self.g)
        dev = self.device
        x0, cond, t, r, noise = x0[mine].to(dev), cond.select(mine).to(dev), t[mine].to(dev), r[mine].to(dev), noise[mine].to(dev)
        loss, err, extra = self.loss(x0, cond, t, r, noise)
        total = loss + sum(self.terms[name].weight * value for name, value in extra.items())
        self.update.zero_grad()
        self.update.backward(total * frac)
        self.update.step()
        update_ema(self.ema, self.generator, self.cfg.ema_decay)
        jumps = t > r
        row = {"loss": loss * frac, "mse": err.mean() * frac,
               "interval_mse": (err[jumps].sum() / jumps.sum().clamp_min(1)) * frac,
               **{name: value * frac for name, value in extra.items()}}
        return {**{k: ddp.allreduce_sum(v.detach()).item() for k, v in row.items()}, **self.passes.take()}
