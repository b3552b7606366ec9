"""The layout of one packed AVGen sample, shared by the format stage (writer) and its readers.

A sample ``<key>`` of a shard has the members ``.mp4`` (the video at the model's size and fps,
H.264, no audio), ``.wav`` (mono PCM16 at the model's sample rate), ``.mel.npy`` (float16
``(n_mels, frames)`` log10 mel, ``avgen.data.mel``), ``.txt`` (the caption) and ``.json`` (id,
batch, split, the filter's measurements). Shards are named ``<split>-<batch>-<nnn>.tar`` so that a
per-batch job finds its own shards in the packed dataset. Kept apart from the writer so that the
readers depend on the format, not on the packing code.
"""
from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from genbuild.data.shards import iter_raw_samples
from genbuild.io.av import read_wav, wav_bytes  # noqa: F401  (the .wav member's codec, re-exported)

SPLITS = ("train", "val", "benchmark")
MEMBERS = ("mp4", "wav", "mel.npy", "txt", "json")


def shard_name(split: str, batch: str, index: int) -> str:
    return f"{split}-{batch}-{index:03d}.tar"


def batch_shards(dataset_dir: str | Path, batch: str) -> list[Path]:
    """The shards of one batch, every split, sorted."""
    return sorted((Path(dataset_dir) / "shards").glob(f"*-{batch}-*.tar"))


def split_shards(dataset_dir: str | Path, split: str) -> list[Path]:
    return sorted((Path(dataset_dir) / "shards").glob(f"{split}-*.tar"))


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def iter_samples(shard_path: str | Path) -> Iterator[dict]:
    """Yield {"key", "mp4" (bytes), "audio", "sample_rate", "mel", "caption", "meta"} per sample."""
    for key, files in iter_raw_samples(shard_path, MEMBERS):
        audio, sr = read_wav(files["wav"])
        yield {"key": key, "mp4": files["mp4"], "audio": audio, "sample_rate": sr,
               "mel": np.load(io.BytesIO(files["mel.npy"]), allow_pickle=False).astype(np.float32),
               "caption": files["txt"].decode("utf-8"), "meta": json.loads(files["json"])}


def assign_splits(ids: list[str], seed: int, val_fraction: float, benchmark_fraction: float) -> dict[str, str]:
    """{id: split} for one batch's kept clips: ordered by a seeded hash, the first ones benchmark,
    then val, the rest train. With 3+ clips each non-zero fraction gets at least one, so even the
    sample has a val and a benchmark split; a batch of fewer goes to train."""
    order = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    n = len(order)

    def count(f: float) -> int:
        return max(1, round(n * f)) if f > 0 and n >= 3 else 0

    nb, nv = count(benchmark_fraction), count(val_fraction)
    return {cid: ("benchmark" if k < nb else "val" if k < nb + nv else "train") for k, cid in enumerate(order)}
