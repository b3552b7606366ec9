"""What a pipeline's conditioning must offer the training kit (the model plugin's half of the contract).

The flow-matching math, the samplers and the training methods batch, move and drop conditions
and call the denoiser, but which tensors condition it (a source video and a mask, a reference
image, a caption, an audio track...) and in which order the network takes them is the
pipeline's business. A pipeline supplies one batched class with these methods (PVTT's is
``pvtt.models.conditions.Conditions``); the kit never refers to a pipeline package.
"""
from __future__ import annotations

from typing import Protocol, Self, runtime_checkable

import torch


@runtime_checkable
class Conditioning(Protocol):
    """A batch of conditions for a denoiser ``model``; every method returns a new batch."""

    def null(self) -> Self:
        """The unconditional branch of classifier-free guidance (what CFG dropout trains)."""

    def to(self, device) -> Self:
        """The same conditions on ``device``."""

    def select(self, idx) -> Self:
        """The samples ``idx`` (an index tensor or a slice: a rank's share, a random batch)."""

    def drop(self, keep: torch.Tensor) -> Self:
        """CFG dropout in training: the null conditions where ``keep`` (B,) is False."""

    def denoise(self, model, x: torch.Tensor, t: torch.Tensor, interval: torch.Tensor | None = None) -> torch.Tensor:
        """``model``'s output (the velocity) at noisy latents ``x`` and timesteps ``t`` (B,), in ``x``'s dtype.
        ``interval`` (B,): for an average-velocity model (MeanFlow) the length t - r of the step, in
        timestep units; the kit passes it only to models with ``average_velocity`` set."""
