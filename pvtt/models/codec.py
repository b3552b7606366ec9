"""Latent codecs: pixels <-> the latent space the DiT works in.

The sample and CI use an exact, invertible space-to-depth codec so that a tiny model learns
something visible in minutes; real runs use the Wan VAE through DiffSynth's class and loader.
Frames are float tensors in [-1, 1] shaped (B, 3, F, H, W); latents are (B, C, F', H', W').
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F

from genbuild.weights import require_weights


class Codec(ABC):
    channels: int
    spatial: int
    temporal: int

    @abstractmethod
    def encode(self, frames: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...

    def encode_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, 1, F, H, W) in {0,1} -> the latent grid, as the fraction of each cell covered."""
        b, _, f, h, w = mask.shape
        m = F.avg_pool2d(mask.transpose(1, 2).reshape(b * f, 1, h, w), self.spatial)
        m = m.reshape(b, f, 1, h // self.spatial, w // self.spatial).transpose(1, 2)
        if self.temporal > 1:
            idx = torch.arange(0, f, self.temporal)
            m = m[:, :, idx]
        return m


class SpaceToDepthCodec(Codec):
    """Exact codec: each s x s pixel block becomes 3*s*s channels (no weights, lossless)."""

    def __init__(self, spatial: int = 4):
        self.spatial = spatial
        self.temporal = 1
        self.channels = 3 * spatial * spatial

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = frames.shape
        if h % self.spatial or w % self.spatial:
            raise ValueError(f"frame size {w}x{h} is not a multiple of the codec factor {self.spatial}")
        x = frames.transpose(1, 2).reshape(b * f, c, h, w)
        z = F.pixel_unshuffle(x, self.spatial)
        return z.reshape(b, f, -1, h // self.spatial, w // self.spatial).transpose(1, 2)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = latents.shape
        x = latents.transpose(1, 2).reshape(b * f, c, h, w)
        y = F.pixel_shuffle(x, self.spatial)
        return y.reshape(b, f, 3, h * self.spatial, w * self.spatial).transpose(1, 2)


class WanVAECodec(Codec):
    """The Wan2.1 VAE (8x spatial, 4x temporal, 16 channels) or, with ``wan22``, the Wan2.2 one
    (16x spatial, 4x temporal, 48 channels, for the 5B preset), loaded with DiffSynth's loader."""

    def __init__(self, path: str, device: str = "cpu", dtype: torch.dtype = torch.float32, wan22: bool = False):
        from diffsynth.core.loader.model import load_model
        from diffsynth.models.wan_video_vae import WanVideoVAE, WanVideoVAE38
        from diffsynth.utils.state_dict_converters.wan_video_vae import WanVideoVAEStateDictConverter

        weights = require_weights(path, "Wan2.2 VAE" if wan22 else "Wan VAE")
        self.vae = load_model(WanVideoVAE38 if wan22 else WanVideoVAE, str(weights), torch_dtype=dtype, device=device,
                              state_dict_converter=WanVideoVAEStateDictConverter)
        self.device = device
        self.spatial, self.temporal, self.channels = (16, 4, 48) if wan22 else (8, 4, 16)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(frames, device=self.device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents, device=self.device)


def build_codec(cfg: dict) -> Codec:
    kind = cfg.get("kind", "space_to_depth")
    if kind == "space_to_depth":
        return SpaceToDepthCodec(int(cfg.get("factor", 4)))
    if kind == "wan_vae":
        return WanVAECodec(cfg["path"])
    if kind == "wan22_vae":
        return WanVAECodec(cfg["path"], wan22=True)
    raise ValueError(f"model codec.kind: unknown codec '{kind}' (known: space_to_depth, wan_vae, wan22_vae)")
