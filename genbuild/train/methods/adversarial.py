"""The adversarial term of DMD2: a discriminator head on the fake score's own features.

DMD2 (Yin et al., 2024) and NVIDIA FastGen add a GAN loss without a separate discriminator
network: the fake score (the critic that tracks the generator's distribution) already embeds
noisy latents; a small head on one of its blocks classifies real (ground truth) against
generated latents, trained with the critic, while the generator is trained to make its samples
look real to it through the same path. Video latents keep their (frames, height, width) layout,
so the head is 3-D convolutional over the block's tokens put back on their grid.

The kit does not know the denoiser's layout: the pipeline says which block feeds the head
(``block``) and how that block's tokens map back to a grid (``to_grid``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from genbuild.train.flow import call_model


class Conv3dHead(nn.Module):
    """(B, C, F, H, W) features -> (B,) real/fake logits: two 3-D convolutions, mean-pooled."""

    def __init__(self, channels: int, hidden: int = 64, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(nn.Conv3d(channels, hidden, 3, padding=1), nn.GroupNorm(8 if hidden % 8 == 0 else 1, hidden),
                                 nn.SiLU(), nn.Conv3d(hidden, 1, 1))
        with torch.no_grad():  # seeded, so that two runs (and a resumed one) start alike
            for p in self.net.parameters():
                if p.ndim > 1:
                    p.copy_(torch.randn(p.shape, generator=g) * (2.0 / p[0].numel()) ** 0.5)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).mean(dim=(1, 2, 3, 4))


@dataclass
class Adversarial:
    """The GAN term's settings and head. ``block(fake) -> nn.Module``: the fake score's block whose
    output feeds the head; ``to_grid(tokens, latents) -> (B, C, F, H, W)``."""

    weight: float                      # the generator's GAN loss weight (0: off)
    block: Callable[[nn.Module], nn.Module]
    to_grid: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    channels: int                      # the block's token width
    critic_weight: float = 1.0         # the head's loss weight in the critic update
    hidden: int = 64
    seed: int = 0
    head: Conv3dHead = field(init=False)
    _features: list = field(init=False, default_factory=list)
    _recording: bool = field(init=False, default=False)

    def __post_init__(self):
        self.head = Conv3dHead(self.channels, self.hidden, self.seed)

    def attach(self, fake: nn.Module) -> None:
        """Record the block's output while ``logits`` calls ``fake`` (a forward hook)."""
        self.block(fake).register_forward_hook(lambda module, args, out: self._record(out))
        self.head.to(next(fake.parameters()).device)

    def _record(self, out: torch.Tensor) -> None:
        if self._recording:
            self._features.append(out)

    def logits(self, fake: nn.Module, x: torch.Tensor, sigma: torch.Tensor, cond: Any) -> torch.Tensor:
        """Head logits for noisy latents ``x`` at ``sigma``, through the fake score's block."""
        self._recording = True
        try:
            call_model(fake, x, sigma, cond)
        finally:
            self._recording = False
        tokens = self._features.pop()
        self._features.clear()
        return self.head(self.to_grid(tokens, x))
