"""Training loader over the packed WebDataset shards, decoding in worker processes.

Decoding mp4s (an ffmpeg process per video) costs far more than a tiny training step and
grows with resolution; at the seed's scale (20K triplets, 720p) it must overlap the step.
:class:`ShardDataset` gives random access to the samples of one split's shards (a tar index
of member offsets, built once), so a ``torch.utils.data.DataLoader`` can decode batches in
``num_workers`` processes while the model trains.

Why map-style and not a streaming ``webdataset.WebDataset`` pipeline: the batches must be a
pure function of (seed, step, micro-batch) (:func:`batch_indices`), so a run resumed from a
checkpoint, or run with another number of workers, sees exactly the same batches; a shuffled
stream cannot be resumed at step k without replaying it. The shards are the same WebDataset
tars (``<key>.<ext>`` members) that ``webdataset`` reads.

Users: the latent cache stage (``pvtt.latents``) decodes every split through it, and the
teacher with ``teacher.data: stream`` trains straight from the shards through it, encoding
each batch with the frozen codec and condition encoders.
"""
from __future__ import annotations

import hashlib
import io
import logging
import tarfile
import tempfile
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch
from PIL import Image

from ..io.video import read_frames
from ..models.encoders import reference_to_tensor
from ..pack import MEMBERS
from .data import Triplets, frame_indices

log = logging.getLogger(__name__)


def shard_paths(dataset_dir: str | Path, split: str) -> list[Path]:
    paths = sorted((Path(dataset_dir) / "shards").glob(f"{split}-*.tar"))
    if not paths:
        raise FileNotFoundError(f"{dataset_dir}/shards: no '{split}' shards (is the dataset built?)")
    return paths


def video_tensor(data: bytes, size: tuple[int, int], idx_fn) -> torch.Tensor:
    """An mp4's bytes -> (3, F, H, W) in [-1, 1] at ``size``, frames ``idx_fn(n)``."""
    with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
        f.write(data)
        f.flush()
        frames = read_frames(f.name, size=size)
    frames = frames[idx_fn(len(frames))]
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0


def index_shard(path: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """{key: {ext: (data offset, size)}} of one tar, in member order."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    with tarfile.open(path, "r") as tar:
        for m in tar:
            if m.isfile():
                key, _, ext = m.name.partition(".")
                out.setdefault(key, {})[ext] = (m.offset_data, m.size)
    return out


class ShardDataset(torch.utils.data.Dataset):
    """The samples of one split, decoded at the training geometry ``td`` (params train_data).

    Item i is a dict of tensors: source/edited (3, F, H, W) in [-1, 1], mask (1, F, H, W),
    reference (3, R, R), plus key and caption. File handles are opened lazily per process, so
    the dataset pickles cheaply into DataLoader workers.
    """

    def __init__(self, dataset_dir: str | Path, split: str, td: dict):
        self.shards = shard_paths(dataset_dir, split)
        self.td = {k: int(td[k]) for k in ("width", "height", "frames", "frame_stride", "reference_size")}
        self.items: list[tuple[int, str, dict[str, tuple[int, int]]]] = []
        for si, shard in enumerate(self.shards):
            for key, members in index_shard(shard).items():
                missing = [m for m in MEMBERS if m not in members]
                if missing:
                    raise ValueError(f"{shard}: sample {key} lacks members {missing}")
                self.items.append((si, key, members))
        if not self.items:
            raise ValueError(f"{dataset_dir}: split '{split}' has no samples")
        self._files: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_files": {}}

    def _read(self, si: int, span: tuple[int, int]) -> bytes:
        f = self._files.get(si)
        if f is None:
            f = self._files[si] = open(self.shards[si], "rb")
        f.seek(span[0])
        return f.read(span[1])

    def __getitem__(self, i: int) -> dict:
        si, key, members = self.items[i]
        raw = {ext: self._read(si, members[ext]) for ext in MEMBERS if ext != "json"}  # json: metadata, unused
        td = self.td
        size = (td["width"], td["height"])
        idx_fn = lambda n: frame_indices(n, td["frames"], td["frame_stride"])  # noqa: E731
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

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


def collate(items: list[dict]) -> Triplets:
    return Triplets([s["key"] for s in items], torch.stack([s["source"] for s in items]),
                    torch.stack([s["edited"] for s in items]), torch.stack([s["mask"] for s in items]),
                    torch.stack([s["reference"] for s in items]), [s["caption"] for s in items],
                    [s["reference_rgba"] for s in items])


def batch_indices(seed: int, n: int, batch: int, step: int, micro: int = 0) -> list[int]:
    """The sample indices of micro-batch ``micro`` of ``step``: a pure function, so resuming
    at any step, or decoding with any number of workers, gives the same batches."""
    h = hashlib.sha256(f"{seed}:{step}:{micro}".encode()).digest()
    g = torch.Generator().manual_seed(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))
    return torch.randint(0, n, (batch,), generator=g).tolist()


def make_loader(ds: ShardDataset, batches: list[list[int]] | Iterator[list[int]], workers: int) -> torch.utils.data.DataLoader:
    """A DataLoader decoding ``batches`` (lists of indices) in ``workers`` processes, in order."""
    kw = {"num_workers": workers, "collate_fn": collate}
    if workers > 0:
        kw.update(prefetch_factor=2, persistent_workers=False)
    return torch.utils.data.DataLoader(ds, batch_sampler=batches, **kw)


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


class StepBatches:
    """Iterable of the index lists for steps ``start..iters-1`` x ``accum`` micro-batches."""

    def __init__(self, seed: int, n: int, batch: int, accum: int, start: int, iters: int):
        self.seed, self.n, self.batch, self.accum, self.start, self.iters = seed, n, batch, accum, start, iters

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.iters):
            for micro in range(self.accum):
                yield batch_indices(self.seed, self.n, self.batch, step, micro)

    def __len__(self) -> int:
        return max(0, self.iters - self.start) * self.accum
