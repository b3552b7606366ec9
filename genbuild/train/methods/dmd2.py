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
regression term pulls the student's x0 towards the ground-truth edit (the dataset has it):
latent MSE here, or the pipeline's own ``regression`` (pixel space, LPIPS). The pipeline may add
more terms on the generated x0 (``GeneratorTerm``: temporal consistency, background
preservation, identity, ...), each with its weight, and an adversarial term (``Adversarial``,
``genbuild.train.methods.adversarial``): a 3-D convolutional head on one block of the fake
score, trained with the critic, as DMD2 and NVIDIA FastGen do.

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
from genbuild.train.cost import PassCounter
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
from genbuild.train.methods.adversarial import Adversarial
from genbuild.train.methods.base import Method
from genbuild.train.methods.student import GeneratorTerm, StudentConfig, update_ema
from genbuild.train.optim import Updater

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class DMDConfig(StudentConfig):
    fake_lr: float
    critic_steps: int
    regression_weight: float
    guidance_convention: str = "standard"

    def __post_init__(self):
        if self.guidance_convention != "standard":
            raise ValueError(f"{self.param_prefix}guidance_convention: only 'standard' (uncond + w(cond-uncond)) "
                             "is implemented")


class DMD2(Method):
    """Owns the three networks and their losses; ``step`` does one generator update."""

    def __init__(self, generator, teacher, cfg: DMDConfig, terms: dict[str, GeneratorTerm] | None = None,
                 regression: Callable | None = None, adversarial: Adversarial | None = None):
        self.cfg = cfg
        self.terms = {name: t for name, t in (terms or {}).items() if t.weight > 0}
        self.regression = regression or (lambda x0_gen, x0_true, cond: F.mse_loss(x0_gen, x0_true))
        self.adversarial = adversarial if adversarial is not None and adversarial.weight > 0 else None
        self.columns = ("dmd", "regression", "critic", *self.terms, *(("gan", "gan_critic") if self.adversarial else ()))
        self.generator = generator.train()
        self.teacher = teacher.eval().requires_grad_(False)
        self.fake = copy.deepcopy(teacher).train().requires_grad_(True)
        self.ema = copy.deepcopy(generator).eval().requires_grad_(False)
        self.generator_params = [p for p in self.generator.parameters() if p.requires_grad]
        self.fake_params = [p for p in self.fake.parameters() if p.requires_grad]
        self.opt_g = torch.optim.AdamW(self.generator.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.0, 0.99))
        if self.adversarial is not None:  # the head trains with the critic, in its optimiser
            self.adversarial.attach(self.fake)
            self.fake_params += list(self.adversarial.head.parameters())
        self.opt_f = torch.optim.AdamW(self.fake_params, lr=cfg.fake_lr, weight_decay=0.0, betas=(0.0, 0.99))
        self.device = next(generator.parameters()).device
        self.update_g = Updater(self.generator, self.opt_g, self.device, params=self.generator_params)
        self.update_f = Updater(self.fake, self.opt_f, self.device, params=self.fake_params)
        self.sigmas = sigma_schedule(cfg.steps, cfg.shift).to(self.device)
        self.g = torch.Generator().manual_seed(cfg.seed)
        self.mine, self.full = slice(None), 0  # this rank's share of the current global batch
        self.passes = PassCounter(self.generator, self.teacher, self.fake)

    def _randn(self, shape) -> torch.Tensor:
        return torch.randn((self.full, *shape[1:]), generator=self.g)[self.mine].to(self.device)

    def _sigmas(self) -> torch.Tensor:
        return sample_sigmas(self.full, self.cfg.shift, self.g)[self.mine].to(self.device)

    # -- checkpoints: everything ``step`` reads or changes, so a resumed run continues exactly --
    def state_dict(self) -> dict:
        state = {"generator": self.generator.state_dict(), "fake": self.fake.state_dict(), "ema": self.ema.state_dict(),
                 "opt_g": self.opt_g.state_dict(), "opt_f": self.opt_f.state_dict(), "noise_rng": self.g.get_state()}
        if self.adversarial is not None:
            state["head"] = self.adversarial.head.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.fake.load_state_dict(state["fake"])
        self.ema.load_state_dict(state["ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_f.load_state_dict(state["opt_f"])
        self.g.set_state(state["noise_rng"])
        if self.adversarial is not None:
            self.adversarial.head.load_state_dict(state["head"])

    def _simulate(self, cond: Conditioning, shape) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the student from noise for a random number i < k of its steps; return (x at s_i, s_i)."""
        i = int(torch.randint(0, self.cfg.steps, (1,), generator=self.g))
        x = self._randn(shape)
        with torch.no_grad():
            for j in range(i):
                v = call_model(self.generator, x, self.sigmas[j], cond, self.sigmas[j] - self.sigmas[j + 1])
                x = x + (self.sigmas[j + 1] - self.sigmas[j]) * v
        return x, self.sigmas[i]

    def _generate(self, x: torch.Tensor, s: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The generator's x0 from (x, s): one jump to s = 0 (for an average-velocity generator,
        a MeanFlow student further distilled by DMD2, its mean velocity over [0, s])."""
        return x0_from_velocity(x, call_model(self.generator, x, s, cond, s), s)

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

    def gan_critic_loss(self, x0_sample: torch.Tensor, x0_true: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The head's loss: ground truth real, the generator's samples fake, both noised alike."""
        sigma, noise = self._sigmas(), self._randn(x0_true.shape)
        real = self.adversarial.logits(self.fake, noisy(x0_true, noise, sigma), sigma, cond)
        fake = self.adversarial.logits(self.fake, noisy(x0_sample.detach(), noise, sigma), sigma, cond)
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    def gan_loss(self, x0_gen: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The generator's non-saturating GAN loss through the fake score's block and the head."""
        sigma, noise = self._sigmas(), self._randn(x0_gen.shape)
        return F.softplus(-self.adversarial.logits(self.fake, noisy(x0_gen, noise, sigma), sigma, cond)).mean()

    def _critic_update(self, x0_sample: torch.Tensor, x0_true: torch.Tensor, cond: Conditioning, frac: float) -> dict:
        """``critic_steps`` updates of the fake score (and the head); the last step's losses."""
        for _ in range(self.cfg.critic_steps):
            loss_f = self.critic_loss(x0_sample, cond) * frac
            loss_gc = (self.gan_critic_loss(x0_sample, x0_true, cond) * frac if self.adversarial is not None
                       else torch.zeros((), device=self.device))
            self.update_f.zero_grad()
            self.update_f.backward(loss_f + (self.adversarial.critic_weight * loss_gc if self.adversarial else 0))
            self.update_f.step()
        out = {"critic": ddp.allreduce_sum(loss_f).item()}
        if self.adversarial is not None:
            out["gan_critic"] = ddp.allreduce_sum(loss_gc).item()
        return out

    def generator_losses(self, x0_gen: torch.Tensor, x0_true: torch.Tensor, cond: Conditioning) -> dict[str, torch.Tensor]:
        """Every term of the generator's loss, unweighted (``loss_total`` weighs them)."""
        zero = torch.zeros((), device=self.device)
        losses = {"dmd": self.dmd_loss(x0_gen, cond),
                  "regression": self.regression(x0_gen, x0_true, cond) if self.cfg.regression_weight > 0 else zero}
        losses.update({name: t.fn(x0_gen, x0_true, cond) for name, t in self.terms.items()})
        if self.adversarial is not None:
            losses["gan"] = self.gan_loss(x0_gen, cond)
        return losses

    def loss_total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        total = losses["dmd"] + self.cfg.regression_weight * losses["regression"]
        total = total + sum(t.weight * losses[name] for name, t in self.terms.items())
        if self.adversarial is not None:
            total = total + self.adversarial.weight * losses["gan"]
        return total

    def step(self, x0_true: torch.Tensor, cond: Conditioning) -> dict:
        """One generator update (after ``critic_steps`` fake-score updates) on a global batch."""
        self.passes.reset()
        self.full = len(x0_true)
        self.mine = ddp.share(self.full, f"{self.cfg.param_prefix}batch_size")
        frac = (self.mine.stop - self.mine.start) / self.full  # 1.0 in one process: the same arithmetic
        x0_true, cond = x0_true[self.mine].to(self.device), cond.select(self.mine).to(self.device)
        x, s = self._simulate(cond, x0_true.shape)
        # Critic (fake score, and the GAN head) updates on the current generator's samples.
        with torch.no_grad():
            x0_sample = self._generate(x, s, cond)
        row = self._critic_update(x0_sample, x0_true, cond, frac)
        # Generator update.
        x0_gen = self._generate(x, s, cond)
        losses = {k: v * frac for k, v in self.generator_losses(x0_gen, x0_true, cond).items()}
        self.update_g.zero_grad()
        self.update_g.backward(self.loss_total(losses))
        self.update_g.step()
        update_ema(self.ema, self.generator, self.cfg.ema_decay)
        row.update({k: ddp.allreduce_sum(v.detach()).item() for k, v in losses.items()})
        return {**row, "sim_sigma": float(s), **self.passes.take()}


@torch.no_grad()
def few_step_mse(model, x0: torch.Tensor, cond: Conditioning, steps: int, shift: float, cfg_scale: float = 1.0,
                 seed: int = 11) -> float:
    """MSE between k-step samples and the ground-truth latents from fixed noise: the gate metric."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=g)
    out = sample(model.eval(), cond, noise, steps, shift, cfg_scale)
    return F.mse_loss(out, x0).item()
