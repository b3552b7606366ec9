"""WebDataset shards: byte-reproducible writing, reading by sample, random access by offset.

A shard is a tar whose members ``<key>.<ext>`` group into samples by key (the WebDataset
convention, so ``webdataset`` reads them too). Writing is reproducible (mtime 0, uid/gid 0, no
user names, mode 0o644, GNU format): the same samples give the same bytes, and DVC's cache hits.
What members a sample must have is the pipeline's to say: every reader takes that list.
"""
from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

TAR_FORMAT = tarfile.GNU_FORMAT


def write_tar(path: str | Path, members: list[tuple[str, bytes]]) -> None:
    """Write a reproducible tar; ``members`` must already be in the wanted order."""
    with tarfile.open(path, "w", format=TAR_FORMAT) as tar:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), 0, 0o644
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            ti.type = tarfile.REGTYPE
            tar.addfile(ti, io.BytesIO(data))


def check_members(shard: str | Path, key: str, present, required: Sequence[str]) -> None:
    missing = [m for m in required if m not in present]
    if missing:
        raise ValueError(f"{shard}: sample {key} lacks members {missing}")


def iter_raw_samples(shard_path: str | Path, required: Sequence[str]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield (key, {ext: bytes}) per sample of a shard, in order; a sample missing a required member raises."""
    key, files = None, {}
    with tarfile.open(shard_path, "r") as tar:
        for m in tar:
            if not m.isfile():
                continue
            k, _, ext = m.name.partition(".")
            if k != key:
                if key is not None:
                    check_members(shard_path, key, files, required)
                    yield key, files
                key, files = k, {}
            files[ext] = tar.extractfile(m).read()
    if key is not None:
        check_members(shard_path, key, files, required)
        yield key, files


def shard_paths(dataset_dir: str | Path, split: str) -> list[Path]:
    """The shards of one split (``<dataset>/shards/<split>-*.tar``), sorted."""
    paths = sorted((Path(dataset_dir) / "shards").glob(f"{split}-*.tar"))
    if not paths:
        raise FileNotFoundError(f"{dataset_dir}/shards: no '{split}' shards (is the dataset built?)")
    return paths


def index_shard(path: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """{key: {ext: (data offset, size)}} of one tar, in member order."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    with tarfile.open(path, "r") as tar:
        for m in tar:
            if m.isfile():
                key, _, ext = m.name.partition(".")
                out.setdefault(key, {})[ext] = (m.offset_data, m.size)
    return out
