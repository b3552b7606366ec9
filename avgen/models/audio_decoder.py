"""The audio decoder: the backbone's audio tokens -> the velocity of the 80-bin log-mel.

A stack of transformer layers of its own width refines the audio tokens after the joint
backbone (the mel needs finer spectral detail than the shared width carries), then a final
adaLN-modulated projection turns each token back into its ``audio_patch`` mel frames. The
projection starts at zero, so an untrained network predicts zero velocity for the mel.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from avgen.models.backbone import TransformerLayer, modulate


class AudioDecoder(ModelMixin, ConfigMixin):
    """``layers`` transformer layers of ``width`` on the audio tokens -> (B, mel_bins, T) mel velocity."""

    _supports_gradient_checkpointing = True
    _no_split_modules = ["TransformerLayer"]

    @register_to_config
    def __init__(self, hidden: int = 64, mel_bins: int = 80, audio_patch: int = 5, layers: int = 2, width: int = 64,
                 heads: int = 4, mlp_ratio: float = 4.0):
        super().__init__()
        self.proj_in = nn.Linear(hidden, width)
        self.blocks = nn.ModuleList(TransformerLayer(width, heads, mlp_ratio) for _ in range(layers))
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Linear(hidden, 2 * width)
        self.proj_out = nn.Linear(width, mel_bins * audio_patch)
        self.gradient_checkpointing = False
        for layer in (self.modulation, self.proj_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, tokens: torch.Tensor, cond: torch.Tensor, frames: int) -> torch.Tensor:
        """``tokens`` (B, Na, hidden), ``cond`` (B, hidden) the backbone's adaLN vector, ``frames`` the mel's T."""
        x = self.proj_in(tokens)
        for layer in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(layer, x)
            else:
                x = layer(x)
        shift, scale = self.modulation(F.silu(cond)).unsqueeze(1).chunk(2, dim=-1)
        x = self.proj_out(modulate(self.norm_out(x), shift, scale))
        b, n, _ = x.shape
        mel = x.view(b, n, self.config.mel_bins, self.config.audio_patch).permute(0, 2, 1, 3)
        return mel.reshape(b, self.config.mel_bins, n * self.config.audio_patch)[..., :frames]
