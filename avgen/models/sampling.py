"""Sampling AVGen-DiT with Diffusers' flow-matching Euler scheduler, on the kit's schedule.

Why Diffusers' scheduler and not only the kit's loop: a Diffusers pipeline (and anyone swapping
in another Diffusers flow-matching scheduler) steps exactly this way. Why it must agree with the
kit (``genbuild.train.flow.sample``): training measures progress with the kit's sampler, and the
deployed model must generate what was measured. The two coincide when the scheduler is handed
the kit's unshifted levels ``linspace(1, 0, steps + 1)[:-1]`` as ``sigmas`` with the same
static ``shift`` (``use_dynamic_shifting=False``): it shifts them with the same formula and
appends the final 0. Left to its own ``set_timesteps(steps)`` it would instead spread the
steps between its (already shifted) sigma_max and sigma_min, which differs. The network sees
t = 1000 * sigma, as in the kit, and guidance uses the kit's convention (uncond + w (cond - uncond)).
"""
from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from avgen.models.conditions import AVConditions, unpack
from genbuild.train.flow import guided_velocity


def make_scheduler(shift: float) -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift, use_dynamic_shifting=False)


def set_kit_schedule(scheduler: FlowMatchEulerDiscreteScheduler, steps: int, device=None) -> None:
    """Give ``scheduler`` the kit's ``sigma_schedule(steps, shift)`` (steps levels from 1, then 0)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    levels = torch.linspace(1.0, 0.0, steps + 1)[:-1]
    scheduler.set_timesteps(sigmas=levels.numpy(), device=device)


def draw_noise(cond: AVConditions, generator: torch.Generator) -> torch.Tensor:
    """The starting noise (B, N) of the flat joint target, drawn on ``generator``'s device (CPU: the same
    numbers whatever device then samples)."""
    return torch.randn((cond.clip_text.shape[0], cond.numel), generator=generator, device=generator.device)


@torch.no_grad()
def sample(network, cond: AVConditions, steps: int, generator: torch.Generator, shift: float = 3.0,
           cfg_scale: float = 1.0, noise: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Generate the modalities ``cond`` names: (video latents (B, 4, F, h, w) | None, mel (B, 80, T) | None).

    ``noise`` (B, N) replaces the draw from ``generator`` (to compare samplers on the same start);
    ``cfg_scale`` > 1 adds the unconditional branch ``cond.null()``."""
    device = next(network.parameters()).device
    x = (draw_noise(cond, generator) if noise is None else noise).to(device)
    cond = cond.to(device)
    scheduler = make_scheduler(shift)
    set_kit_schedule(scheduler, steps, device)
    for i, t in enumerate(scheduler.timesteps):
        v = guided_velocity(network, x, scheduler.sigmas[i], cond, cfg_scale)
        x = scheduler.step(v, t, x).prev_sample
    return unpack(x, cond)
