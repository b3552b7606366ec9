"""Temporal alignment between the video and audio token streams, after the joint backbone.

The backbone already attends jointly; this module adds what attention alone does poorly: a
dedicated exchange between the streams (video tokens attend to audio tokens and the reverse,
each followed by an MLP, Flamingo's gated cross-attention-dense) and a temporal convolution
per modality (over frames for each video patch position, over time for the audio tokens),
which sharpens onsets and motion peaks so that sound events land on the frame that makes them.

Every branch is gated by a learned per-channel gate that starts at zero, so the module starts
as the identity and stage 2 (joint training) grows it from there. With one modality absent
there is nothing to align: the tokens pass through unchanged (and stage 1 leaves it at init).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from avgen.models.backbone import Attention, FeedForward


class GatedCrossAttention(nn.Module):
    """``x`` attends to ``context``, then an MLP; both residual branches gated (init 0)."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm_q = nn.LayerNorm(hidden, eps=1e-6)
        self.norm_kv = nn.LayerNorm(hidden, eps=1e-6)
        self.attn = Attention(hidden, heads)
        self.norm_mlp = nn.LayerNorm(hidden, eps=1e-6)
        self.mlp = FeedForward(hidden, mlp_ratio)
        self.gate_attn = nn.Parameter(torch.zeros(hidden))
        self.gate_mlp = nn.Parameter(torch.zeros(hidden))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.gate_attn * self.attn(self.norm_q(x), self.norm_kv(context))
        return x + self.gate_mlp * self.mlp(self.norm_mlp(x))


class TemporalConv(nn.Module):
    """A residual 1-D convolution over time, gated (init 0); depthwise or full across channels."""

    def __init__(self, hidden: int, kernel_size: int, depthwise: bool):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"alignment.kernel_size must be odd (a centred window), got {kernel_size}")
        self.norm = nn.LayerNorm(hidden, eps=1e-6)
        self.conv = nn.Conv1d(hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden if depthwise else 1)
        self.gate = nn.Parameter(torch.zeros(hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, T, D): N independent sequences of T steps."""
        return x + self.gate * self.conv(self.norm(x).transpose(1, 2)).transpose(1, 2)


class TemporalAlignment(ModelMixin, ConfigMixin):
    """Cross-modal attention both ways + a temporal convolution per modality; identity at init."""

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(self, hidden: int = 64, heads: int = 4, mlp_ratio: float = 2.0, kernel_size: int = 3,
                 depthwise: bool = False):
        super().__init__()
        self.video_from_audio = GatedCrossAttention(hidden, heads, mlp_ratio)
        self.audio_from_video = GatedCrossAttention(hidden, heads, mlp_ratio)
        self.video_conv = TemporalConv(hidden, kernel_size, depthwise)
        self.audio_conv = TemporalConv(hidden, kernel_size, depthwise)

    def forward(self, video: torch.Tensor | None, audio: torch.Tensor | None,
                video_grid: tuple[int, int, int] | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``video`` (B, F'h'w', D) in (F', h', w') order, ``audio`` (B, Na, D) -> the same, aligned."""
        if video is None or audio is None:
            return video, audio
        v = self.video_from_audio(video, audio)
        a = self.audio_from_video(audio, video)
        b, _, d = v.shape
        f, h, w = video_grid
        per_pixel = v.view(b, f, h * w, d).transpose(1, 2).reshape(b * h * w, f, d)
        v = self.video_conv(per_pixel).view(b, h * w, f, d).transpose(1, 2).reshape(b, f * h * w, d)
        return v, self.audio_conv(a)
