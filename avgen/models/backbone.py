"""The unified DiT: one transformer denoising video-latent tokens and mel tokens as one sequence.

Why one sequence: joint self-attention lets every video patch see every audio patch (and the
reverse) at every layer, which is what makes the soundtrack follow the picture. Both modalities
share the attention weights and the timestep; each keeps its own MLP (a modality expert, as
MM-DiT / VLMo do), because latent patches and mel patches have very different statistics.

Tokens carry where they are in *seconds* (sinusoids of the time of their frames, on one clock
for both modalities), so a video token and the audio tokens of the same instant look alike to
attention whatever the frame and hop rates; video tokens also carry their row and column, and
a learned modality embedding tells the two kinds apart. The text condition is the CLIP and CLAP
text embeddings, concatenated: projected into a few tokens for cross-attention and into the
adaLN vector beside the timestep. Blocks are adaLN-Zero (DiT): at init each is the identity.

Either modality may be absent (stage 1 trains unimodal batches): the sequence is then just the
other modality's tokens, and nothing of the missing one is computed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.modeling_utils import ModelMixin

POSITIONS_PER_SECOND = 100.0  # sinusoid positions in 10 ms units: finer than the audio hop (16 ms), ~100 s range
MODALITIES = ("video", "audio")


# -- layers shared by the backbone, the alignment module and the decoders -------------------------
def sinusoid(x: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) positions or timesteps -> (N, dim) sinusoids (diffusers' convention, cos first)."""
    return get_timestep_embedding(x.float().flatten(), dim, flip_sin_to_cos=True, downscale_freq_shift=0)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class Attention(nn.Module):
    """Multi-head attention through ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels).

    Self-attention when ``context`` is None, cross-attention otherwise. RMS-normalised queries and
    keys keep the logits bounded, which large DiTs need to train stably in bf16.
    """

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, qk_norm: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(context_dim or dim, 2 * dim)
        self.to_out = nn.Linear(dim, dim)
        head_dim = dim // heads
        self.norm_q = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.norm_k = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        ctx = x if context is None else context
        q = self.to_q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k, v = self.to_kv(ctx).view(b, ctx.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(self.norm_q(q), self.norm_k(k), v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, d))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float):
        super().__init__()
        inner = int(round(dim * mlp_ratio))
        self.fc1 = nn.Linear(dim, inner)
        self.fc2 = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class TransformerLayer(nn.Module):
    """A pre-norm transformer encoder layer (self-attention + MLP): the audio decoder's layer."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FeedForward(dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


# -- the DiT block --------------------------------------------------------------------------------
class DiTBlock(nn.Module):
    """adaLN-Zero block: joint self-attention, cross-attention to the text tokens, per-modality MLP.

    The modulation (shift, scale, gate for attention and MLP) comes from the conditioning vector
    and starts at zero, so the block starts as the identity (DiT's adaLN-Zero). Cross-attention is
    ungated, as in PixArt-alpha.
    """

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, qk_norm: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, heads, qk_norm=qk_norm)
        self.norm_cross = nn.LayerNorm(hidden, eps=1e-6)
        self.cross_attn = Attention(hidden, heads, qk_norm=qk_norm)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.ModuleDict({m: FeedForward(hidden, mlp_ratio) for m in MODALITIES})
        self.modulation = nn.Linear(hidden, 6 * hidden)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, text: torch.Tensor, cond: torch.Tensor, n_video: int) -> torch.Tensor:
        """``x`` (B, Nv + Na, D): the video tokens first; ``n_video`` says where the audio tokens start."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(cond)).unsqueeze(1).chunk(6, dim=-1)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1))
        x = x + self.cross_attn(self.norm_cross(x), text)
        h = modulate(self.norm2(x), shift2, scale2)
        parts = [self.mlp[m](p) for m, p in zip(MODALITIES, (h[:, :n_video], h[:, n_video:])) if p.shape[1]]
        return x + gate2 * torch.cat(parts, dim=1)


@dataclass
class JointTokens:
    """What the backbone hands to the alignment module and the decoders."""

    video: torch.Tensor | None          # (B, Nv, hidden) video tokens, (F', h', w') order
    audio: torch.Tensor | None          # (B, Na, hidden) audio tokens, in time order
    cond: torch.Tensor                  # (B, hidden) the adaLN vector (timestep + pooled text)
    video_grid: tuple[int, int, int] | None = None   # (F', h', w') token grid
    video_size: tuple[int, int, int] | None = None   # (F, h, w) of the latents (the decoders crop padding to it)
    audio_frames: int | None = None                  # T of the mel


def pad_to(x: torch.Tensor, multiples: tuple[int, ...]) -> torch.Tensor:
    """Zero-pad the trailing ``len(multiples)`` dims of ``x`` up to multiples (patches must tile the input)."""
    pad = []
    for size, m in zip(reversed(x.shape[-len(multiples):]), reversed(multiples)):
        pad += [0, -size % m]
    return F.pad(x, pad) if any(pad) else x


class UnifiedDiT(ModelMixin, ConfigMixin):
    """The joint audio-video denoiser's trunk (see the module docstring for the design)."""

    _supports_gradient_checkpointing = True
    _no_split_modules = ["DiTBlock"]

    @register_to_config
    def __init__(self, latent_channels: int = 4, mel_bins: int = 80, patch_size: tuple[int, int, int] = (1, 2, 2),
                 audio_patch: int = 5, hidden: int = 64, layers: int = 2, heads: int = 4, mlp_ratio: float = 4.0,
                 clip_dim: int = 512, clap_dim: int = 512, text_tokens: int = 4, time_freq_dim: int = 256,
                 video_fps: float = 8.0, audio_frame_rate: float = 62.5, qk_norm: bool = True):
        super().__init__()
        if hidden % 8:
            raise ValueError(f"backbone.hidden must be a multiple of 8 (the position sinusoids split it), got {hidden}")
        pt, ph, pw = patch_size
        self.video_embed = nn.Linear(latent_channels * pt * ph * pw, hidden)
        self.audio_embed = nn.Linear(mel_bins * audio_patch, hidden)
        self.modality_embed = nn.Parameter(torch.zeros(2, hidden))
        self.time_embed = nn.Sequential(nn.Linear(time_freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        text_dim = clip_dim + clap_dim
        self.text_to_cond = nn.Linear(text_dim, hidden)
        self.text_to_tokens = nn.Sequential(nn.Linear(text_dim, hidden), nn.SiLU(), nn.Linear(hidden, text_tokens * hidden))
        self.blocks = nn.ModuleList(DiTBlock(hidden, heads, mlp_ratio, qk_norm) for _ in range(layers))
        self.gradient_checkpointing = False
        nn.init.normal_(self.modality_embed, std=0.02)

    # -- embeddings -----------------------------------------------------------------------------
    def _text(self, clip_text: torch.Tensor, clap_text: torch.Tensor) -> torch.Tensor:
        """Both embeddings L2-normalised and scaled to unit-variance entries (CLIP/CLAP vectors have norm ~1,
        so their entries are tiny); the null condition (zeros) stays exactly zero."""
        c = self.config
        parts = [F.normalize(e.float(), dim=-1) * math.sqrt(e.shape[-1]) for e in (clip_text, clap_text)]
        if parts[0].shape[-1] != c.clip_dim or parts[1].shape[-1] != c.clap_dim:
            raise ValueError(f"text embeddings are {parts[0].shape[-1]}/{parts[1].shape[-1]} wide; the backbone "
                             f"takes clip_dim={c.clip_dim}, clap_dim={c.clap_dim}")
        return torch.cat(parts, dim=-1)

    def _video_tokens(self, video: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        pt, ph, pw = self.config.patch_size
        x = pad_to(video, (pt, ph, pw))
        b, c, f, h, w = x.shape
        grid = (f // pt, h // ph, w // pw)
        x = x.view(b, c, grid[0], pt, grid[1], ph, grid[2], pw).permute(0, 2, 4, 6, 1, 3, 5, 7)
        tokens = self.video_embed(x.reshape(b, grid[0] * grid[1] * grid[2], -1))
        return tokens + self._video_positions(grid, pt).to(tokens.dtype) + self.modality_embed[0], grid

    def _video_positions(self, grid: tuple[int, int, int], pt: int) -> torch.Tensor:
        """Half the width encodes the time of the patch's first frame in seconds, a quarter each its row and column."""
        d = self.config.hidden
        dev = self.modality_embed.device
        f, h, w = grid
        seconds = torch.arange(f, device=dev) * pt / self.config.video_fps
        pe_t = sinusoid(seconds * POSITIONS_PER_SECOND, d // 2)[:, None, None].expand(f, h, w, -1)
        pe_h = sinusoid(torch.arange(h, device=dev), d // 4)[None, :, None].expand(f, h, w, -1)
        pe_w = sinusoid(torch.arange(w, device=dev), d // 4)[None, None, :].expand(f, h, w, -1)
        return torch.cat([pe_t, pe_h, pe_w], dim=-1).reshape(f * h * w, d)

    def _audio_tokens(self, audio: torch.Tensor) -> torch.Tensor:
        p = self.config.audio_patch
        x = pad_to(audio, (p,))
        b, m, t = x.shape
        tokens = self.audio_embed(x.view(b, m, t // p, p).permute(0, 2, 1, 3).reshape(b, t // p, m * p))
        seconds = torch.arange(t // p, device=x.device) * p / self.config.audio_frame_rate
        pe = sinusoid(seconds * POSITIONS_PER_SECOND, self.config.hidden // 2)
        pe = torch.cat([pe, pe.new_zeros(t // p, self.config.hidden - pe.shape[1])], dim=-1)  # no row/column
        return tokens + pe.to(tokens.dtype) + self.modality_embed[1]

    # -- forward --------------------------------------------------------------------------------
    def forward(self, video: torch.Tensor | None, audio: torch.Tensor | None, timestep: torch.Tensor,
                clip_text: torch.Tensor, clap_text: torch.Tensor) -> JointTokens:
        """``video`` (B, C, F, h, w) latents and/or ``audio`` (B, mel_bins, T) mel, ``timestep`` (B,) in 0..1000,
        ``clip_text`` (B, clip_dim), ``clap_text`` (B, clap_dim) -> the hidden tokens of each present modality."""
        if video is None and audio is None:
            raise ValueError("UnifiedDiT: give video latents, audio mel or both")
        dtype = self.video_embed.weight.dtype
        text = self._text(clip_text, clap_text).to(dtype)
        cond = self.time_embed(sinusoid(timestep, self.config.time_freq_dim).to(dtype)) + self.text_to_cond(text)
        context = self.text_to_tokens(text).view(text.shape[0], self.config.text_tokens, self.config.hidden)
        seq, grid = [], None
        if video is not None:
            v, grid = self._video_tokens(video.to(dtype))
            seq.append(v)
        if audio is not None:
            seq.append(self._audio_tokens(audio.to(dtype)))
        n_video = seq[0].shape[1] if video is not None else 0
        x = torch.cat(seq, dim=1)
        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(block, x, context, cond, n_video)
            else:
                x = block(x, context, cond, n_video)
        return JointTokens(
            video=x[:, :n_video] if video is not None else None, audio=x[:, n_video:] if audio is not None else None,
            cond=cond, video_grid=grid, video_size=tuple(video.shape[2:]) if video is not None else None,
            audio_frames=audio.shape[-1] if audio is not None else None)
