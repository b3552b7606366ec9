"""Packed triplets -> model-ready tensors.

The WebDataset shards of one split are decoded at the training resolution by
``pvtt.train.loader`` (``frames`` frames every ``frame_stride``); this module holds the
decoded and encoded containers and encodes everything once (codec latents,
reference-image tokens, caption tokens): the latent cache stage (``pvtt.train.latents``) stores
the result, so the training loops read tensors, not videos.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from pvtt.models.conditions import Conditions

log = logging.getLogger(__name__)


@dataclass
class Triplets:
    keys: list[str]
    source: torch.Tensor     # (N, 3, F, H, W) in [-1, 1]
    edited: torch.Tensor     # (N, 3, F, H, W) in [-1, 1]
    mask: torch.Tensor       # (N, 1, F, H, W) in {0, 1}
    reference: torch.Tensor  # (N, 3, R, R) in [-1, 1]
    captions: list[str]
    reference_rgba: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class Encoded:
    keys: list[str]
    target: torch.Tensor     # edited-video latents
    cond: Conditions

    def __len__(self) -> int:
        return len(self.keys)


def frame_indices(n: int, frames: int, stride: int) -> list[int]:
    """``frames`` indices every ``stride`` of an ``n``-frame clip, repeating the last when it is short."""
    return [min(i * stride, n - 1) for i in range(frames)]


@torch.no_grad()
def encode(tr: Triplets, bundle) -> Encoded:
    """Encode with the model bundle's codec and frozen condition encoders."""
    codec = bundle.codec
    cond = Conditions(
        source=bundle.encode_source(tr.source, tr.mask),
        mask=codec.encode_mask(tr.mask),
        image_tokens=bundle.image_encoder(tr.reference),
        text_tokens=bundle.text_encoder(tr.captions),
    )
    return Encoded(tr.keys, codec.encode(tr.edited), cond)
