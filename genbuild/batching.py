"""Items grouped per job: what keeps a DAG's job count proportional to batches, not to items.

Snakemake's DAG building degrades past tens of thousands of jobs, and every SLURM job re-parses
the Snakefile, so a stage over 19.5M clips cannot have a job per clip. Items are grouped in
manifest order into batches of ``per_job`` (a params key of the pipeline); each per-item stage
runs once per batch and writes one directory holding its items. Batch ids are fixed-width
(``b0000``) so that they sort, and a batch's members are a pure function of the manifest and
``per_job``: re-running with the same inputs gives the same batches.

At parse time only the number of items is needed (``count_lines`` reads a CSV manifest in binary
chunks, about a second per GB), not the items themselves.

``build_batch`` is the job side of a stage whose items keep one directory each: it builds the batch
directory atomically, one item subdirectory after the other, and turns an item's unexpected
exception into that item's reject (the batch goes on); only the exception types named ``fatal``
(missing weights, invalid params: the same for every item) stop the job.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from genbuild.io.atomic import atomic_path

log = logging.getLogger(__name__)

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


def build_batch(out: str | os.PathLike, items: Sequence[str], build_item: Callable[[str, Path], object],
                failed_item: Callable[[str, Path, str], object],
                fatal: tuple[type[BaseException], ...] = ()) -> dict[str, str]:
    """Build the batch directory ``out`` holding ``out/<item>/`` for every item, in one rename.

    ``build_item(item, item_dir)`` writes the item's directory (its outputs and its own rejects);
    when it raises, the partial directory is removed and ``failed_item(item, item_dir, reason)``
    writes what the item's consumers read (a rejected status, a rejects.jsonl row naming the
    reason), so one bad item never fails the batch. Exceptions of the ``fatal`` types (and
    KeyboardInterrupt/SystemExit) propagate: the job fails and ``out`` is left untouched.
    Returns {item: "ok" | reason}.
    """
    status: dict[str, str] = {}
    with atomic_path(out, directory=True) as tmp:
        for item in items:
            d = tmp / item
            try:
                build_item(item, d)
            except fatal:
                raise
            except Exception as e:  # noqa: BLE001 - one item's failure is that item's reject
                reason = f"{e.__class__.__name__}: {e}"
                log.exception("%s: failed, recorded as a reject", item)
                if d.exists():
                    shutil.rmtree(d)
                d.mkdir(parents=True)
                failed_item(item, d, reason)
                status[item] = reason
            else:
                status[item] = "ok"
    failed = sum(v != "ok" for v in status.values())
    log.info("%s: %d items, %d failed", Path(out).name, len(status), failed)
    return status
