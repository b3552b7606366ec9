"""The video decoder: the backbone's video tokens -> the velocity of the 4-channel SD-VAE latents.

Tokens are laid back on their (F', h', w') grid as a feature volume of ``channels``, and a
stack of 3-D convolutions (k=3, GroupNorm + SiLU, residual) works on it, upsampling back to
the latent grid on the way. Why convolutions after a transformer: neighbouring latent pixels
inside a patch and across patch borders are decoded together, which removes the blocky seams
a per-token linear unpatchify leaves. The timestep/text vector shifts and scales the features
once at the input (FiLM). The last convolution starts at zero: an untrained network predicts
zero velocity for the video.

Upsampling (nearest) happens before each of the last ``ceil(log2(max patch))`` convolutions,
in equal geometric steps, so that the expensive wide layers run on the coarse grid.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


class ConvLayer(nn.Module):
    """GroupNorm -> SiLU -> Conv3d(k=3); residual when the width is kept."""

    def __init__(self, channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.conv = nn.Conv3d(channels, out_channels, kernel_size=3, padding=1)
        self.residual = channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(F.silu(self.norm(x)))
        return x + h if self.residual else h


def upsample_sizes(grid: tuple[int, ...], full: tuple[int, ...], stages: int) -> list[tuple[int, ...]]:
    """``stages`` sizes going geometrically from ``grid`` to ``full`` (the last is ``full`` exactly)."""
    sizes = [tuple(max(g, round(g * (f / g) ** (s / stages))) for g, f in zip(grid, full)) for s in range(1, stages)]
    return sizes + [tuple(full)] if stages else []


class VideoDecoder(ModelMixin, ConfigMixin):
    """Unpatchify to a (B, channels, F', h', w') volume, then ``layers`` 3-D convs up to (B, C, F, h, w)."""

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(self, hidden: int = 64, latent_channels: int = 4, patch_size: tuple[int, int, int] = (1, 2, 2),
                 layers: int = 2, channels: int = 16, groups: int = 4):
        super().__init__()
        if layers < 1:
            raise ValueError(f"video_decoder.layers must be >= 1, got {layers}")
        self.norm_in = nn.LayerNorm(hidden, eps=1e-6)
        self.proj_in = nn.Linear(hidden, channels)
        self.film = nn.Linear(hidden, 2 * channels)
        self.convs = nn.ModuleList(ConvLayer(channels, channels, groups) for _ in range(layers - 1))
        self.conv_out = ConvLayer(channels, latent_channels, groups)
        self.gradient_checkpointing = False
        for layer in (self.film, self.conv_out.conv):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def upsample_stages(self) -> int:
        factor = max(self.config.patch_size)
        return min(math.ceil(math.log2(factor)) if factor > 1 else 0, self.config.layers)

    def forward(self, tokens: torch.Tensor, cond: torch.Tensor, grid: tuple[int, int, int],
                size: tuple[int, int, int]) -> torch.Tensor:
        """``tokens`` (B, F'h'w', hidden) on ``grid`` (F', h', w'), ``cond`` (B, hidden) -> (B, C, *size) velocity."""
        b = tokens.shape[0]
        x = self.proj_in(self.norm_in(tokens))
        shift, scale = self.film(F.silu(cond)).unsqueeze(1).chunk(2, dim=-1)
        x = x * (1 + scale) + shift
        x = x.transpose(1, 2).reshape(b, -1, *grid)
        full = tuple(g * p for g, p in zip(grid, self.config.patch_size))
        stages = self.upsample_stages()
        sizes = upsample_sizes(tuple(grid), full, stages)
        layers = [*self.convs, self.conv_out]
        first_up = len(layers) - stages
        for i, layer in enumerate(layers):
            if i >= first_up:
                x = F.interpolate(x, size=sizes[i - first_up], mode="nearest")
            if torch.is_grad_enabled() and self.gradient_checkpointing and layer is not self.conv_out:
                x = self._gradient_checkpointing_func(layer, x)
            else:
                x = layer(x)
        f, h, w = size
        return x[:, :, :f, :h, :w]
