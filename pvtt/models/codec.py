"""Latent codecs: pixels <-> the latent space the DiT works in.

The sample and CI use an exact, invertible space-to-depth codec so that a tiny model learns
something visible in minutes; real runs use the Wan VAE through DiffSynth's class and loader.
Frames are float tensors in [-1, 1] shaped (B, 3, F, H, W); latents are (B, C, F', H', W').
The VAE runs on the device and in the dtype params give it (``model.device`` / ``model.dtype``, or
``model.codec.device`` / ``.dtype``: ``pvtt.models.components``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F

from genbuild.weights import require_weights, weights_error


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


def wan_vae(**arch):
    """DiffSynth's ``WanVideoVAE`` (Wan2.1, z_dim 16); ``arch`` re-sizes its inner ``VideoVAE_`` (tests: ``dim``)."""
    from diffsynth.models.wan_video_vae import VideoVAE_, WanVideoVAE

    vae = WanVideoVAE()
    if arch:
        vae.model = VideoVAE_(**{"z_dim": 16, **arch}).eval().requires_grad_(False)
    return vae


def wan22_vae(**arch):
    """DiffSynth's ``WanVideoVAE38`` (Wan2.2, z_dim 48); ``arch`` (``dim``) re-sizes it."""
    from diffsynth.models.wan_video_vae import WanVideoVAE38

    return WanVideoVAE38(**arch)


class WanVAECodec(Codec):
    """The Wan2.1 VAE (8x spatial, 4x temporal, 16 channels) or, with ``wan22``, the Wan2.2 one
    (16x spatial, 4x temporal, 48 channels, for the 5B preset), loaded with DiffSynth's loader and
    state-dict converter onto ``device`` in ``dtype``. It encodes and decodes there; frames and
    latents come back float32 on the device they were given on (the CPU, for the latent cache)."""

    def __init__(self, path: str, device=torch.device("cpu"), dtype: torch.dtype = torch.float32, wan22: bool = False,
                 arch: dict | None = None, key: str = "model.codec.path"):
        from diffsynth.core.loader.model import load_model
        from diffsynth.utils.state_dict_converters.wan_video_vae import WanVideoVAEStateDictConverter

        what = "Wan2.2 VAE" if wan22 else "Wan VAE"
        weights = require_weights(path, what)
        try:
            self.vae = load_model(wan22_vae if wan22 else wan_vae, str(weights), config=dict(arch or {}), torch_dtype=dtype,
                                  device=str(device), state_dict_converter=WanVideoVAEStateDictConverter)
        except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as e:
            raise weights_error(what, weights, key, "do not fit DiffSynth's VAE", e) from e
        self.device, self.dtype = torch.device(device), dtype
        self.spatial, self.temporal, self.channels = (16, 4, 48) if wan22 else (8, 4, 16)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        z = self.vae.encode(frames.to(dtype=self.dtype), device=self.device)
        return z.to(device=frames.device, dtype=torch.float32)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        x = self.vae.decode(latents.to(dtype=self.dtype), device=self.device)
        return x.to(device=latents.device, dtype=torch.float32)


CODEC_KINDS = ("space_to_depth", "wan_vae", "wan22_vae")


def codec_channels(cfg: dict) -> int:
    """Latent channels of a codec, without loading it."""
    kind = cfg.get("kind", "space_to_depth")
    if kind == "space_to_depth":
        return 3 * int(cfg.get("factor", 4)) ** 2
    if kind not in CODEC_KINDS:
        raise ValueError(f"model codec.kind: unknown codec '{kind}' (known: {', '.join(CODEC_KINDS)})")
    return {"wan_vae": 16, "wan22_vae": 48}[kind]


def build_codec(cfg: dict, device=torch.device("cpu"), dtype: torch.dtype = torch.float32) -> Codec:
    """The codec ``cfg`` names, placed on ``device`` in ``dtype`` (the space-to-depth codec is exact
    reshaping, without weights: it runs where its input is, in the input's dtype)."""
    kind = cfg.get("kind", "space_to_depth")
    if kind == "space_to_depth":
        return SpaceToDepthCodec(int(cfg.get("factor", 4)))
    if kind in ("wan_vae", "wan22_vae"):
        return WanVAECodec(cfg.get("path"), device, dtype, wan22=kind == "wan22_vae", arch=cfg.get("arch"))
    raise ValueError(f"model codec.kind: unknown codec '{kind}' (known: {', '.join(CODEC_KINDS)})")
