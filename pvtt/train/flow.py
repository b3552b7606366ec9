"""Flow-matching objective and the generic optimisation loop pieces (schedule, batching)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..models.sampler import Conditions, call_model, shift_sigma


def sample_sigmas(n: int, shift: float, generator: torch.Generator) -> torch.Tensor:
    """Training noise levels: uniform in (0, 1), shifted as at sampling time."""
    u = torch.rand(n, generator=generator).clamp(1e-3, 1 - 1e-3)
    return shift_sigma(u, shift)


def draw_batch(train, batch: int, cond_dropout: float, shift: float, g: torch.Generator):
    """One flow-matching batch from encoded triplets: indices, CFG dropout of image and caption,
    noise levels and noise, drawn from ``g`` in this order (checkpoint resume relies on it)."""
    idx = torch.randint(0, len(train), (batch,), generator=g)
    return noise_batch(train.target[idx], train.cond.select(idx), cond_dropout, shift, g)


def noise_batch(x0: torch.Tensor, cond: Conditions, cond_dropout: float, shift: float, g: torch.Generator):
    """CFG dropout, noise levels and noise for a batch whose samples are already chosen
    (``draw_batch``, or a loader that decodes them: ``pvtt.train.loader``)."""
    batch = x0.shape[0]
    keep = torch.rand(batch, generator=g) >= cond_dropout
    cond = cond.drop(keep)
    sigma = sample_sigmas(batch, shift, g)
    noise = torch.randn(x0.shape, generator=g)
    return x0, cond, sigma, noise


def noisy(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    s = sigma.view(-1, *([1] * (x0.ndim - 1)))
    return (1 - s) * x0 + s * noise


def flow_matching_loss(model, x0: torch.Tensor, cond: Conditions, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """MSE on the velocity (Wan's objective); on x0 for source-residual models, where the
    velocity's 1/s factor would blow up the weight of the lowest noise levels."""
    x_t = noisy(x0, noise, sigma)
    v = call_model(model, x_t, sigma, cond)
    if getattr(model, "prediction", "velocity") == "source_residual":
        return F.mse_loss(x0_from_velocity(x_t, v, sigma), x0)
    return F.mse_loss(v, noise - x0)


def x0_from_velocity(x_t: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    s = sigma.view(-1, *([1] * (x_t.ndim - 1))) if sigma.ndim else sigma
    return x_t - s * v


def warmup_cosine(step: int, total: int, warmup: int, floor: float = 0.1) -> float:
    """LR multiplier: linear warm-up, then cosine decay to ``floor``."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    p = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))


@torch.no_grad()
def fixed_loss(model, x0: torch.Tensor, cond: Conditions, shift: float, seed: int = 7, levels: int = 8) -> float:
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
