"""Training loader over WebDataset shards, decoding in worker processes.

Decoding videos (an ffmpeg process each) costs far more than a tiny training step and grows
with resolution; at scale it must overlap the step. :class:`ShardDataset` gives random access
to the samples of one split's shards (a tar index of member offsets, built once), so a
``torch.utils.data.DataLoader`` can decode batches in ``num_workers`` processes while the
model trains. What a sample holds and how it decodes is the pipeline's: it passes the
required members and a ``decode(key, {ext: bytes}) -> item`` function.

Why map-style and not a streaming ``webdataset.WebDataset`` pipeline: the batches must be a
pure function of (seed, step, micro-batch) (:func:`batch_indices`), so a run resumed from a
checkpoint, or run with another number of workers, sees exactly the same batches; a shuffled
stream cannot be resumed at step k without replaying it.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from genbuild.data.shards import check_members, index_shard, shard_paths


class ShardDataset(torch.utils.data.Dataset):
    """The samples of one split; item i is ``decode(key, raw members)``.

    File handles are opened lazily per process, so the dataset pickles cheaply into
    DataLoader workers. Members not in ``read`` (metadata nobody decodes) are not read.
    """

    def __init__(self, dataset_dir: str | Path, split: str, members: Sequence[str],
                 decode: Callable[[str, dict[str, bytes]], object], read: Sequence[str] | None = None):
        self.shards = shard_paths(dataset_dir, split)
        self.decode = decode
        self.read = tuple(read if read is not None else members)
        self.items: list[tuple[int, str, dict[str, tuple[int, int]]]] = []
        for si, shard in enumerate(self.shards):
            for key, spans in index_shard(shard).items():
                check_members(shard, key, spans, members)
                self.items.append((si, key, spans))
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

    def __getitem__(self, i: int):
        si, key, spans = self.items[i]
        return self.decode(key, {ext: self._read(si, spans[ext]) for ext in self.read})

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


def batch_indices(seed: int, n: int, batch: int, step: int, micro: int = 0) -> list[int]:
    """The sample indices of micro-batch ``micro`` of ``step``: a pure function, so resuming
    at any step, or decoding with any number of workers, gives the same batches."""
    h = hashlib.sha256(f"{seed}:{step}:{micro}".encode()).digest()
    g = torch.Generator().manual_seed(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))
    return torch.randint(0, n, (batch,), generator=g).tolist()


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


def make_loader(ds: ShardDataset, batches, workers: int, collate: Callable) -> torch.utils.data.DataLoader:
    """A DataLoader decoding ``batches`` (lists of indices) in ``workers`` processes, in order."""
    kw = {"num_workers": workers, "collate_fn": collate}
    if workers > 0:
        kw.update(prefetch_factor=2, persistent_workers=False)
    return torch.utils.data.DataLoader(ds, batch_sampler=batches, **kw)
