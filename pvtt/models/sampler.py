"""Flow matching as Wan trains and samples it: x_s = (1 - s) x0 + s noise, velocity = noise - x0.

The timestep the DiT sees is 1000 * s; ``shift`` bends the schedule towards high noise
(s' = shift*s / (1 + (shift-1)*s)), as Wan's scheduler does. Classifier-free guidance uses the
standard convention uncond + w (cond - uncond) (w = 1: no guidance).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def shift_sigma(s: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * s / (1 + (shift - 1) * s)


def sigma_schedule(steps: int, shift: float) -> torch.Tensor:
    """steps+1 noise levels from 1 to 0 (shifted)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return shift_sigma(torch.linspace(1.0, 0.0, steps + 1), shift)


@dataclass
class Conditions:
    """Everything the denoiser is conditioned on, batched."""

    source: torch.Tensor        # (B, C, F, H, W) source-video latents
    mask: torch.Tensor          # (B, 1, F, H, W) edit region on the latent grid
    image_tokens: torch.Tensor  # (B, 257, 1280) reference product image
    text_tokens: torch.Tensor   # (B, L, D) caption

    def null(self) -> "Conditions":
        """The unconditional branch for CFG: no reference image, no caption (video and mask stay)."""
        return Conditions(self.source, self.mask, torch.zeros_like(self.image_tokens), torch.zeros_like(self.text_tokens))

    def to(self, device) -> "Conditions":
        return Conditions(*(t.to(device) for t in (self.source, self.mask, self.image_tokens, self.text_tokens)))

    def select(self, idx) -> "Conditions":
        return Conditions(self.source[idx], self.mask[idx], self.image_tokens[idx], self.text_tokens[idx])

    def drop(self, keep: torch.Tensor) -> "Conditions":
        """Zero image and text conditions where ``keep`` (B,) is False (CFG dropout in training)."""
        k3 = keep.view(-1, 1, 1).to(self.image_tokens.dtype)
        return Conditions(self.source, self.mask, self.image_tokens * k3, self.text_tokens * k3)


def call_model(model, x: torch.Tensor, sigma: torch.Tensor, cond: Conditions) -> torch.Tensor:
    t = (sigma * 1000.0).expand(x.shape[0]) if sigma.ndim == 0 else sigma * 1000.0
    return model(x, t.to(x.dtype), cond.source, cond.mask, cond.image_tokens, cond.text_tokens)


def guided_velocity(model, x: torch.Tensor, sigma: torch.Tensor, cond: Conditions, cfg_scale: float) -> torch.Tensor:
    v_cond = call_model(model, x, sigma, cond)
    if cfg_scale == 1.0:
        return v_cond
    v_uncond = call_model(model, x, sigma, cond.null())
    return v_uncond + cfg_scale * (v_cond - v_uncond)


@torch.no_grad()
def sample(model, cond: Conditions, noise: torch.Tensor, steps: int, shift: float, cfg_scale: float = 1.0,
           velocity_fn=None) -> torch.Tensor:
    """Euler integration of the flow from noise (s=1) to data (s=0) in ``steps`` steps."""
    velocity_fn = velocity_fn or (lambda x, s: guided_velocity(model, x, s, cond, cfg_scale))
    sigmas = sigma_schedule(steps, shift)
    x = noise
    for i in range(steps):
        v = velocity_fn(x, sigmas[i])
        x = x + (sigmas[i + 1] - sigmas[i]) * v
    return x
