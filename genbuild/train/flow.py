"""Flow matching as Wan trains and samples it: x_s = (1 - s) x0 + s noise, velocity = noise - x0.

The timestep the network sees is 1000 * s; ``shift`` bends the schedule towards high noise
(s' = shift*s / (1 + (shift-1)*s)), as Wan's scheduler does. Classifier-free guidance uses the
standard convention uncond + w (cond - uncond) (w = 1: no guidance).

Here lives the math every method and sampler shares: noise schedules, the training batch draws,
the objective, Euler sampling and a fixed-noise progress measure. Conditions are any
``genbuild.train.conditioning.Conditioning``: the model is always called through
``cond.denoise``, so a pipeline with other conditioning inputs uses these functions unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genbuild.train.conditioning import Conditioning


# -- schedules -----------------------------------------------------------------------------------
def shift_sigma(s: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * s / (1 + (shift - 1) * s)


def sigma_schedule(steps: int, shift: float) -> torch.Tensor:
    """steps+1 noise levels from 1 to 0 (shifted)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return shift_sigma(torch.linspace(1.0, 0.0, steps + 1), shift)


def sample_sigmas(n: int, shift: float, generator: torch.Generator) -> torch.Tensor:
    """Training noise levels: uniform in (0, 1), shifted as at sampling time."""
    u = torch.rand(n, generator=generator).clamp(1e-3, 1 - 1e-3)
    return shift_sigma(u, shift)


# -- the model call ------------------------------------------------------------------------------
def _timesteps(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    t = (sigma * 1000.0).expand(x.shape[0]) if sigma.ndim == 0 else sigma * 1000.0
    return t.to(x.dtype)


def call_model(model, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning,
               interval: torch.Tensor | None = None) -> torch.Tensor:
    """The model's velocity at ``x``, noise level ``sigma``. ``interval`` (sigma - r): the step the
    caller is about to take; an average-velocity model (MeanFlow, ``model.average_velocity``)
    returns its mean velocity over [r, sigma], a plain one its instantaneous velocity, which is
    Euler's own estimate of that mean."""
    if interval is None or not getattr(model, "average_velocity", False):
        return cond.denoise(model, x, _timesteps(sigma, x))
    return cond.denoise(model, x, _timesteps(sigma, x), interval=_timesteps(interval, x))


def guided_velocity(model, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning, cfg_scale: float,
                    interval: torch.Tensor | None = None) -> torch.Tensor:
    v_cond = call_model(model, x, sigma, cond, interval)
    if cfg_scale == 1.0:
        return v_cond
    v_uncond = call_model(model, x, sigma, cond.null(), interval)
    return v_uncond + cfg_scale * (v_cond - v_uncond)


@dataclass
class KeepRegion:
    """Known clean latents to keep where ``weight`` is 1 (latent blending, as in RePaint and
    Diffusers' inpainting pipelines): after every sampling step that region is replaced by the
    known latents noised to the step's level with the sampler's own noise, so the model only
    fills the rest and the kept region ends exactly as given. ``weight`` in [0, 1] broadcasts
    over the latents (soft edges blend)."""

    latents: torch.Tensor
    weight: torch.Tensor

    def apply(self, x: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.weight * noisy(self.latents, noise, sigma.reshape(-1)) + (1 - self.weight) * x


@torch.no_grad()
def sample(model, cond: Conditioning, noise: torch.Tensor, steps: int, shift: float, cfg_scale: float = 1.0,
           velocity_fn=None, keep: KeepRegion | None = None) -> torch.Tensor:
    """Euler integration of the flow from noise (s=1) to data (s=0) in ``steps`` steps; ``keep``
    holds a region to the known latents at every step (``KeepRegion``). An average-velocity model
    is told each step's length, which makes the same loop MeanFlow's few-step sampler."""
    velocity_fn = velocity_fn or (lambda x, s, ds: guided_velocity(model, x, s, cond, cfg_scale, ds))
    sigmas = sigma_schedule(steps, shift)
    x = noise
    for i in range(steps):
        v = velocity_fn(x, sigmas[i], sigmas[i] - sigmas[i + 1])
        x = x + (sigmas[i + 1] - sigmas[i]) * v
        if keep is not None:
            x = keep.apply(x, noise, sigmas[i + 1])
    return x


# -- training batches ----------------------------------------------------------------------------
def pick_batch(data, batch: int, g: torch.Generator):
    """``batch`` random samples (with replacement) of encoded data (``.target``, ``.cond``), drawn from ``g``."""
    idx = torch.randint(0, len(data), (batch,), generator=g)
    return data.target[idx], data.cond.select(idx)


def draw_batch(train, batch: int, cond_dropout: float, shift: float, g: torch.Generator):
    """One flow-matching batch from encoded triplets: indices, CFG dropout of image and caption,
    noise levels and noise, drawn from ``g`` in this order (checkpoint resume relies on it)."""
    return noise_batch(*pick_batch(train, batch, g), cond_dropout, shift, g)


def noise_batch(x0: torch.Tensor, cond: Conditioning, cond_dropout: float, shift: float, g: torch.Generator):
    """CFG dropout, noise levels and noise for a batch whose samples are already chosen
    (``pick_batch``, or a loader that decodes them)."""
    batch = x0.shape[0]
    keep = torch.rand(batch, generator=g) >= cond_dropout
    cond = cond.drop(keep)
    sigma = sample_sigmas(batch, shift, g)
    noise = torch.randn(x0.shape, generator=g)
    return x0, cond, sigma, noise


# -- the objective -------------------------------------------------------------------------------
def noisy(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    s = sigma.view(-1, *([1] * (x0.ndim - 1)))
    return (1 - s) * x0 + s * noise


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error; with ``weight`` (broadcast to the elements) the weighted mean."""
    if weight is None:
        return F.mse_loss(pred, target)
    w = weight.to(pred.dtype).expand_as(pred)
    return ((pred - target) ** 2 * w).sum() / w.sum().clamp_min(1e-12)


def flow_matching_loss(model, x0: torch.Tensor, cond: Conditioning, sigma: torch.Tensor, noise: torch.Tensor,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
    """MSE on the velocity (Wan's objective); on x0 for source-residual models, where the
    velocity's 1/s factor would blow up the weight of the lowest noise levels. ``weight``:
    per-element weights (e.g. a region's), a weighted mean instead of the plain one."""
    x_t = noisy(x0, noise, sigma)
    v = call_model(model, x_t, sigma, cond)
    if getattr(model, "prediction", "velocity") == "source_residual":
        return weighted_mse(x0_from_velocity(x_t, v, sigma), x0, weight)
    return weighted_mse(v, noise - x0, weight)


def x0_from_velocity(x_t: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    s = sigma.view(-1, *([1] * (x_t.ndim - 1))) if sigma.ndim else sigma
    return x_t - s * v


@torch.no_grad()
def fixed_loss(model, x0: torch.Tensor, cond: Conditioning, shift: float, seed: int = 7, levels: int = 8) -> float:
    """Flow-matching loss at fixed noise levels and fixed noise: a low-variance progress measure."""
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    was_training = model.training
    model.eval()
    for k in range(levels):
        s = torch.full((len(x0),), (k + 0.5) / levels)
        s = shift_sigma(s, shift)
        noise = torch.randn(x0.shape, generator=g)
        total += flow_matching_loss(model, x0, cond, s, noise).item()
    model.train(was_training)
    return total / levels
