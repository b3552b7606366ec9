"""Condition encoders: the caption and the reference product image -> token sequences.

The DiT's image branch (Wan I2V's ``img_emb`` + separate image k/v) takes 257 tokens of width
1280, the shape CLIP ViT-H gives (``clip_vit_h``, as Wan I2V). DINOv2 (``dinov2``) is the other
choice: at 224 px with patch 14 it also gives 257 tokens (CLS + 16x16 patches), of its own
width; the DiT then gets an ``img_emb`` of that input width (``image_dim``), new weights either
way, gated to zero at step 0 like the rest of the image branch (``pvtt.models.base``). The tiny encoders used by the sample produce the same
shapes from fixed, seeded random projections (frozen, like the real encoders), so the
conditioning path is the real one and only the feature extractor differs.
"""
from __future__ import annotations

import hashlib
import re

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from genbuild.metrics.learned import IMAGENET_MEAN, IMAGENET_STD
from genbuild.weights import require_weights

IMAGE_TOKENS = 257
IMAGE_DIM = 1280


def reference_to_tensor(rgba: np.ndarray, size: int) -> torch.Tensor:
    """RGBA uint8 product cut-out -> (3, size, size) in [-1, 1], composited on mid grey, letterboxed."""
    rgba = np.asarray(rgba, dtype=np.float32) / 255.0
    if rgba.shape[-1] == 4:
        a = rgba[..., 3:4]
        rgb = rgba[..., :3] * a + 0.5 * (1 - a)
    else:
        rgb = rgba[..., :3]
    h, w = rgb.shape[:2]
    side = max(h, w)
    canvas = np.full((side, side, 3), 0.5, dtype=np.float32)
    canvas[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = rgb
    t = torch.from_numpy(canvas).permute(2, 0, 1)[None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    return t * 2 - 1


class TinyImageEncoder(nn.Module):
    """Frozen random patch features: 16x16 patches of the reference + a mean token -> (257, 1280)."""

    dim = IMAGE_DIM

    def __init__(self, size: int = 64, seed: int = 0):
        super().__init__()
        if size % 16:
            raise ValueError(f"train_data.reference_size must be a multiple of 16, got {size}")
        self.size, self.patch = size, size // 16
        g = torch.Generator().manual_seed(seed)
        self.proj = nn.Linear(3 * self.patch * self.patch, IMAGE_DIM)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(self.proj.weight.shape, generator=g) / (3 * self.patch ** 2) ** 0.5)
            self.proj.bias.zero_()
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        patches = F.unfold(images, self.patch, stride=self.patch).transpose(1, 2)  # (B, 256, 3*p*p)
        tokens = self.proj(patches)
        return torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1)


class WanClipImageEncoder(nn.Module):
    """CLIP ViT-H/14 as Wan I2V uses it (DiffSynth's WanImageEncoder), from a local checkpoint."""

    dim = IMAGE_DIM

    def __init__(self, path: str):
        super().__init__()
        from diffsynth.core.loader.model import load_model
        from diffsynth.models.wan_video_image_encoder import WanImageEncoder

        self.model = load_model(WanImageEncoder, str(require_weights(path, "CLIP ViT-H image encoder")),
                                torch_dtype=torch.float32, device="cpu").requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image([images[:, :, None]])


class Dinov2ImageEncoder(nn.Module):
    """DINOv2 (transformers' Dinov2Model) from a local directory: its last hidden states,
    CLS + patch tokens at 224 px (257 tokens for patch 14), as the reference-image tokens."""

    SIZE = 224
    MEAN, STD = IMAGENET_MEAN, IMAGENET_STD  # as DINOv2 was trained

    def __init__(self, path: str | None = None, model: nn.Module | None = None):
        super().__init__()
        if model is None:
            from transformers import Dinov2Model

            model = Dinov2Model.from_pretrained(str(require_weights(path, "DINOv2 image encoder")), local_files_only=True)
        self.model = model.eval().requires_grad_(False)
        self.dim = int(model.config.hidden_size)
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=(self.SIZE, self.SIZE), mode="bicubic", align_corners=False)
        x = ((x + 1) / 2 - self.mean) / self.std
        return self.model(pixel_values=x).last_hidden_state


class HashedTextEncoder(nn.Module):
    """Caption -> (max_len, text_dim): words hashed into a frozen random embedding table.

    Stands in for umT5 on the sample; deterministic and shape-compatible with the DiT's
    text branch.
    """

    def __init__(self, text_dim: int, max_len: int = 16, vocab: int = 4096, seed: int = 0):
        super().__init__()
        self.max_len, self.vocab = max_len, vocab
        g = torch.Generator().manual_seed(seed + 1)
        self.table = nn.Embedding(vocab + 1, text_dim, padding_idx=vocab)
        with torch.no_grad():
            self.table.weight.copy_(torch.randn(self.table.weight.shape, generator=g))
            self.table.weight[vocab].zero_()
        self.requires_grad_(False)

    def token_ids(self, caption: str) -> list[int]:
        words = re.findall(r"[a-z0-9]+", caption.lower())[: self.max_len]
        ids = [int(hashlib.sha256(w.encode()).hexdigest()[:8], 16) % self.vocab for w in words]
        return ids + [self.vocab] * (self.max_len - len(ids))

    @torch.no_grad()
    def forward(self, captions: list[str]) -> torch.Tensor:
        ids = torch.tensor([self.token_ids(c) for c in captions], dtype=torch.long)
        return self.table(ids)


def image_token_dim(cfg: dict) -> int:
    """Width of the encoder's tokens, read without loading its weights (the DiT is built first)."""
    if cfg.get("kind", "tiny") != "dinov2":
        return IMAGE_DIM
    from transformers import Dinov2Config

    return int(Dinov2Config.from_pretrained(str(require_weights(cfg.get("path"), "DINOv2 image encoder")),
                                            local_files_only=True).hidden_size)


def build_image_encoder(cfg: dict) -> nn.Module:
    kind = cfg.get("kind", "tiny")
    if kind == "tiny":
        return TinyImageEncoder(int(cfg.get("size", 64)), int(cfg.get("seed", 0)))
    if kind == "clip_vit_h":
        return WanClipImageEncoder(cfg["path"])
    if kind == "dinov2":
        return Dinov2ImageEncoder(cfg.get("path"))
    raise ValueError(f"model image_encoder.kind: unknown encoder '{kind}' (known: tiny, clip_vit_h, dinov2)")


def build_text_encoder(cfg: dict, text_dim: int) -> nn.Module:
    kind = cfg.get("kind", "hashed")
    if kind == "hashed":
        return HashedTextEncoder(text_dim, int(cfg.get("max_len", 16)), seed=int(cfg.get("seed", 0)))
    raise ValueError(f"model text_encoder.kind: unknown encoder '{kind}' (known: hashed; umt5 arrives with the real presets)")
