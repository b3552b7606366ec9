"""The features artifact as training data: splits read shard by shard, batches gathered by row.

The features stage already encoded everything (SD-VAE latents, log-mel, CLIP/CLAP text
embeddings), one directory of ``.npy`` arrays per dataset shard (``avgen.features.features``), so
a training step only gathers rows. ``open_split`` memory-maps every shard's arrays: a batch
reads its rows from disk, and the train split of the plan (19.5M clips, ~1 MB of latents each)
never has to fit in memory. ``load_split`` reads a small split (val, benchmark) whole.

A sample's target is the flat joint vector of ``avgen.models.conditions`` (its video latents and
its mel, or one of them for a unimodal batch): the kit's flow-matching code sees one tensor per
sample whatever the modalities.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ARRAYS = ("latents", "mel", "clip_text", "clap_text", "clip_frames", "clap_audio", "snr_db", "sharpness")
META = "meta.json"  # {"ids": [...], "captions": [...]} of a shard's rows


def write_shard(out_dir: Path, arrays: dict[str, np.ndarray], ids: list[str], captions: list[str]) -> None:
    """One shard's features as .npy files (memory-mappable) + its ids and captions."""
    out_dir.mkdir(parents=True)
    for a in ARRAYS:
        np.save(out_dir / f"{a}.npy", arrays[a], allow_pickle=False)
    (out_dir / META).write_text(json.dumps({"ids": ids, "captions": captions}, sort_keys=True))


@dataclass
class FeatureSet:
    """Rows of features in memory (row i of every field is sample ``ids[i]``)."""

    ids: list[str]
    captions: list[str]
    latents: torch.Tensor      # (N, 4, F, h, w)
    mel: torch.Tensor          # (N, n_mels, T)
    clip_text: torch.Tensor    # (N, Dc)
    clap_text: torch.Tensor    # (N, Da)
    clip_frames: torch.Tensor  # (N, Dc): the clip's frames (mean embedding)
    clap_audio: torch.Tensor   # (N, Da): the clip's audio
    snr_db: torch.Tensor       # (N,) the filter's measurements
    sharpness: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, idx) -> FeatureSet:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return FeatureSet([self.ids[i] for i in idx.tolist()], [self.captions[i] for i in idx.tolist()],
                          *(getattr(self, a)[idx] for a in ARRAYS))

    take = subset = rows

    def column(self, name: str) -> torch.Tensor:
        return getattr(self, name)

    def cosine(self, a: str, b: str) -> torch.Tensor:
        return F.cosine_similarity(getattr(self, a), getattr(self, b), dim=1)

    def id_list(self, idx) -> list[str]:
        return [self.ids[i] for i in torch.as_tensor(idx).tolist()]


class FeatureStore:
    """One split's features, memory-mapped shard by shard, optionally restricted to some rows
    (``subset``). Same reading interface as ``FeatureSet``: ``len``, ``rows``, ``column``, ``cosine``."""

    def __init__(self, dirs: list[Path], index: np.ndarray | None = None):
        self.dirs = dirs
        self.arrays = [{a: np.load(d / f"{a}.npy", mmap_mode="r") for a in ARRAYS} for d in dirs]
        sizes = [len(x["snr_db"]) for x in self.arrays]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.index = np.arange(self.starts[-1]) if index is None else np.asarray(index, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    @cached_property
    def _meta(self) -> list[dict]:
        return [json.loads((d / META).read_text()) for d in self.dirs]

    def _locate(self, idx) -> tuple[np.ndarray, np.ndarray]:
        rows = self.index[np.asarray(torch.as_tensor(idx, dtype=torch.long))]
        shard = np.searchsorted(self.starts, rows, side="right") - 1
        return shard, rows - self.starts[shard]

    def rows(self, idx) -> FeatureSet:
        """The rows ``idx`` (of this store) read into memory, in that order."""
        shard, local = self._locate(idx)
        out = {a: np.empty((len(local), *self.arrays[0][a].shape[1:]), np.float32) for a in ARRAYS}
        for s in np.unique(shard):
            at = np.nonzero(shard == s)[0]
            order = np.argsort(local[at], kind="stable")  # memmap reads in increasing order
            for a in ARRAYS:
                out[a][at[order]] = self.arrays[s][a][local[at][order]]
        ids = [self._meta[s]["ids"][i] for s, i in zip(shard.tolist(), local.tolist())]
        caps = [self._meta[s]["captions"][i] for s, i in zip(shard.tolist(), local.tolist())]
        return FeatureSet(ids, caps, *(torch.from_numpy(out[a]) for a in ARRAYS))

    take = rows

    def _per_shard(self, fn) -> torch.Tensor:
        whole = np.concatenate([fn(x) for x in self.arrays]).astype(np.float32)
        return torch.from_numpy(whole[self.index])

    def column(self, name: str) -> torch.Tensor:
        """A per-row scalar (snr_db, sharpness) for every row: N floats, shard by shard."""
        return self._per_shard(lambda x: np.asarray(x[name], np.float32))

    def cosine(self, a: str, b: str) -> torch.Tensor:
        def cos(x):
            u, v = np.asarray(x[a], np.float32), np.asarray(x[b], np.float32)
            return (u * v).sum(1) / np.maximum(np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1), 1e-8)
        return self._per_shard(cos)

    def subset(self, idx) -> FeatureStore:
        view = FeatureStore.__new__(FeatureStore)
        view.dirs, view.arrays, view.starts = self.dirs, self.arrays, self.starts
        view.index = self.index[np.asarray(torch.as_tensor(idx, dtype=torch.long))]
        return view

    def id_list(self, idx) -> list[str]:
        shard, local = self._locate(idx)
        return [self._meta[s]["ids"][i] for s, i in zip(shard.tolist(), local.tolist())]


def split_dirs(features_dir: str | Path, split: str) -> list[Path]:
    return sorted(p for p in (Path(features_dir) / "shards").glob(f"{split}-*") if p.is_dir())


def open_split(features_dir: str | Path, split: str) -> FeatureStore:
    """``split`` memory-mapped; an empty split is an error naming the artifact."""
    dirs = split_dirs(features_dir, split)
    if not dirs:
        raise FileNotFoundError(f"{features_dir}/shards: no '{split}' features (is the features artifact built, "
                                f"and did the dataset put clips in the {split} split?)")
    return FeatureStore(dirs)


def load_split(features_dir: str | Path, split: str) -> FeatureSet:
    """A small split (val, benchmark) read whole into memory."""
    store = open_split(features_dir, split)
    return store.rows(torch.arange(len(store)))
