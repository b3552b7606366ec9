"""PVTT triplets from the packed shards, decoded in worker processes at the training geometry.

The kit's :class:`genbuild.data.loader.ShardDataset` gives random access and worker decoding;
this module says how one PVTT sample (``pvtt.pack.format``) decodes: source and edited video
at ``train_data``'s size and frames, the edit mask resized alike, the reference image as the
image encoder's input. Users: the latent cache stage (``pvtt.train.latents``) decodes every
split through it; the teacher with ``teacher.data: stream`` trains straight from the shards
through it; eval and engine read the benchmark split with ``load_all``.
"""
from __future__ import annotations

import io
import logging
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from genbuild.data import loader as kit
from genbuild.data.loader import StepBatches, batch_indices  # noqa: F401  (the trainers' batch order)
from genbuild.data.shards import shard_paths  # noqa: F401
from genbuild.io.video import read_frames_bytes
from pvtt.models.encoders import reference_to_tensor
from pvtt.pack.format import MEMBERS
from pvtt.train.data import Triplets, frame_indices

log = logging.getLogger(__name__)
GEOMETRY = ("width", "height", "frames", "frame_stride", "reference_size")


def video_tensor(data: bytes, size: tuple[int, int], idx_fn) -> torch.Tensor:
    """An mp4's bytes -> (3, F, H, W) in [-1, 1] at ``size``, frames ``idx_fn(n)``."""
    frames = read_frames_bytes(data, size=size)
    frames = frames[idx_fn(len(frames))]
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0


def decode_triplet(key: str, raw: dict[str, bytes], td: dict) -> dict:
    """One sample's members -> tensors: source/edited (3, F, H, W) in [-1, 1], mask (1, F, H, W),
    reference (3, R, R), plus key, caption and the reference's RGBA pixels."""
    size = (td["width"], td["height"])
    idx_fn = partial(frame_indices, frames=td["frames"], stride=td["frame_stride"])
    mask = np.load(io.BytesIO(raw["mask.npy"]), allow_pickle=False)
    m = np.asarray(mask)[idx_fn(len(mask))].astype(np.uint8)
    m = np.stack([cv2.resize(fm, size, interpolation=cv2.INTER_NEAREST) for fm in m])
    rgba = np.asarray(Image.open(io.BytesIO(raw["reference.png"])).convert("RGBA"))
    return {"key": key, "caption": raw["caption.txt"].decode("utf-8"),
            "source": video_tensor(raw["source.mp4"], size, idx_fn),
            "edited": video_tensor(raw["edited.mp4"], size, idx_fn),
            "mask": torch.from_numpy(m).float()[None],
            "reference": reference_to_tensor(rgba, td["reference_size"]),
            "reference_rgba": rgba}


class ShardDataset(kit.ShardDataset):
    """The triplets of one split, decoded at the training geometry ``td`` (params train_data)."""

    def __init__(self, dataset_dir: str | Path, split: str, td: dict):
        self.td = {k: int(td[k]) for k in GEOMETRY}
        read = [m for m in MEMBERS if m != "json"]  # json: metadata, unused here
        super().__init__(dataset_dir, split, MEMBERS, partial(decode_triplet, td=self.td), read=read)


def collate(items: list[dict]) -> Triplets:
    return Triplets([s["key"] for s in items], torch.stack([s["source"] for s in items]),
                    torch.stack([s["edited"] for s in items]), torch.stack([s["mask"] for s in items]),
                    torch.stack([s["reference"] for s in items]), [s["caption"] for s in items],
                    [s["reference_rgba"] for s in items])


def make_loader(ds: ShardDataset, batches, workers: int) -> torch.utils.data.DataLoader:
    """A DataLoader decoding ``batches`` (lists of indices) of triplets in ``workers`` processes, in order."""
    return kit.make_loader(ds, batches, workers, collate)


def load_all(dataset_dir: str | Path, split: str, td: dict, workers: int = 0, limit: int | None = None,
             batch: int = 8) -> Triplets:
    """The first ``limit`` (default: every) samples of a split, in shard order, decoded by
    ``workers`` processes (0: in this one)."""
    ds = ShardDataset(dataset_dir, split, td)
    n = len(ds) if limit is None else min(int(limit), len(ds))
    chunks = [list(range(i, min(i + batch, n))) for i in range(0, n, batch)]
    log.info("decoding %d %s triplets at %dx%d, %d frames, %d worker process(es)", n, split,
             ds.td["width"], ds.td["height"], ds.td["frames"], workers)
    parts = list(make_loader(ds, chunks, workers))
    ds.close()
    return Triplets([k for p in parts for k in p.keys], torch.cat([p.source for p in parts]),
                    torch.cat([p.edited for p in parts]), torch.cat([p.mask for p in parts]),
                    torch.cat([p.reference for p in parts]), [c for p in parts for c in p.captions],
                    [r for p in parts for r in p.reference_rgba])
