"""Packed triplets -> model-ready tensors.

Reads the WebDataset shards of one split, decodes the videos at the training resolution,
takes ``frames`` frames every ``frame_stride``, and encodes everything once (codec latents,
reference-image tokens, caption tokens): the latent cache stage (``pvtt.latents``) stores
the result, so the training loops read tensors, not videos.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
import io

from ..io.video import read_frames
from ..models.encoders import reference_to_tensor
from ..models.sampler import Conditions
from ..pack import iter_samples

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


def _video_tensor(data: bytes, size: tuple[int, int], idx_fn) -> torch.Tensor:
    with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
        f.write(data)
        f.flush()
        frames = read_frames(f.name, size=size)
    frames = frames[idx_fn(len(frames))]
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0


def shard_paths(dataset_dir: str | Path, split: str) -> list[Path]:
    paths = sorted((Path(dataset_dir) / "shards").glob(f"{split}-*.tar"))
    if not paths:
        raise FileNotFoundError(f"{dataset_dir}/shards: no '{split}' shards (is the dataset built?)")
    return paths


def load_split(dataset_dir: str | Path, split: str, td: dict, limit: int | None = None) -> Triplets:
    w, h, nf, stride = int(td["width"]), int(td["height"]), int(td["frames"]), int(td["frame_stride"])
    ref_size = int(td["reference_size"])
    idx_fn = lambda n: frame_indices(n, nf, stride)
    rows = []
    for shard in shard_paths(dataset_dir, split):
        for s in iter_samples(shard):
            rows.append(s)
            if limit is not None and len(rows) >= limit:
                break
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise ValueError(f"{dataset_dir}: split '{split}' has no samples")
    log.info("decoding %d %s triplets at %dx%d, %d frames", len(rows), split, w, h, nf)
    src, edi, msk, ref, rgba = [], [], [], [], []
    for s in rows:
        src.append(_video_tensor(s["source"], (w, h), idx_fn))
        edi.append(_video_tensor(s["edited"], (w, h), idx_fn))
        m = np.asarray(s["mask"])[idx_fn(len(s["mask"]))].astype(np.uint8)
        m = np.stack([cv2.resize(fm, (w, h), interpolation=cv2.INTER_NEAREST) for fm in m])
        msk.append(torch.from_numpy(m).float()[None])
        im = np.asarray(Image.open(io.BytesIO(s["reference"])).convert("RGBA"))
        rgba.append(im)
        ref.append(reference_to_tensor(im, ref_size))
    return Triplets([s["key"] for s in rows], torch.stack(src), torch.stack(edi), torch.stack(msk),
                    torch.stack(ref), [s["caption"] for s in rows], rgba)


@torch.no_grad()
def encode(tr: Triplets, bundle) -> Encoded:
    """Encode with the model bundle's codec and frozen condition encoders."""
    codec = bundle.codec
    cond = Conditions(
        source=codec.encode(tr.source),
        mask=codec.encode_mask(tr.mask),
        image_tokens=bundle.image_encoder(tr.reference),
        text_tokens=bundle.text_encoder(tr.captions),
    )
    return Encoded(tr.keys, codec.encode(tr.edited), cond)
