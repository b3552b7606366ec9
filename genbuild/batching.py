"""Items grouped per job: what keeps a DAG's job count proportional to batches, not to items.

Snakemake's DAG building degrades past tens of thousands of jobs, and every SLURM job re-parses
the Snakefile, so a stage over 19.5M clips cannot have a job per clip. Items are grouped in
manifest order into batches of ``per_job`` (a params key of the pipeline); each per-item stage
runs once per batch and writes one directory holding its items. Batch ids are fixed-width
(``b0000``) so that they sort, and a batch's members are a pure function of the manifest and
``per_job``: re-running with the same inputs gives the same batches.

At parse time only the number of items is needed (``count_lines`` reads a CSV manifest in binary
chunks, about a second per GB), not the items themselves.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

WIDTH = 4


def batch_id(index: int) -> str:
    """The id of batch ``index``: ``b0000``; wider past 9999 batches (ids still sort by length, then value)."""
    return f"b{index:0{WIDTH}d}"


def batch_index(bid: str) -> int:
    if not (bid.startswith("b") and bid[1:].isdigit()):
        raise ValueError(f"not a batch id: {bid!r} (expected b0000, b0001, ...)")
    return int(bid[1:])


def num_batches(n_items: int, per_job: int) -> int:
    if per_job < 1:
        raise ValueError(f"items per job must be >= 1, got {per_job}")
    return max(1, math.ceil(n_items / per_job)) if n_items else 0


def batch_ids(n_items: int, per_job: int) -> list[str]:
    """The batches of ``n_items`` items, ``per_job`` each (the last one may be short)."""
    return [batch_id(i) for i in range(num_batches(n_items, per_job))]


def members(items: Sequence, bid: str, per_job: int) -> list:
    """The items of batch ``bid`` (a slice of ``items`` in their order)."""
    i = batch_index(bid)
    return list(items[i * per_job:(i + 1) * per_job])


def group(items: Sequence, per_job: int) -> dict[str, list]:
    """{batch id: its items} for every batch."""
    return {b: members(items, b, per_job) for b in batch_ids(len(items), per_job)}


def count_lines(path: str | os.PathLike, chunk: int = 1 << 24) -> int:
    """Number of lines of a text file (a last line without a newline counts), read in binary chunks."""
    n, last = 0, b"\n"
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")
