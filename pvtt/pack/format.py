"""The layout of one packed PVTT triplet, shared by the pack stage (writer) and the loaders.

A sample ``<key>`` of a shard has the members ``.source.mp4``, ``.reference.png`` (RGBA as is),
``.edited.mp4``, ``.mask.npy`` (uint8 (N,H,W) 0/1 edit region), ``.caption.txt`` and ``.json``
(its metadata). Kept apart from ``pvtt.pack.pack`` so the trainers depend on the format, not on
the packing code (a change there does not retrain anything).
"""
from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from genbuild.data.shards import iter_raw_samples

SPLITS = ("train", "val", "benchmark")
MEMBERS = ("source.mp4", "reference.png", "edited.mp4", "mask.npy", "caption.txt", "json")


def iter_samples(shard_path: str | Path) -> Iterator[dict]:
    """Yield {"key","source","reference","edited","mask","caption","meta"} per sample of a shard."""
    for key, files in iter_raw_samples(shard_path, MEMBERS):
        yield {"key": key, "source": files["source.mp4"], "reference": files["reference.png"],
               "edited": files["edited.mp4"], "mask": np.load(io.BytesIO(files["mask.npy"]), allow_pickle=False),
               "caption": files["caption.txt"].decode("utf-8"), "meta": json.loads(files["json"])}
