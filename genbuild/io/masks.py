"""Binary per-frame masks as gzip-compressed .npy (mtime 0, so bytes are reproducible)."""
from __future__ import annotations

import gzip
import io
import os

import numpy as np

from genbuild.io.atomic import write_bytes


def save_masks(path: str | os.PathLike, masks: np.ndarray) -> None:
    """Save an (N, H, W) boolean/uint8 mask stack; nonzero means product."""
    arr = np.ascontiguousarray((np.asarray(masks) > 0).astype(np.uint8))
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=6) as gz:
        gz.write(buf.getvalue())
    write_bytes(path, out.getvalue())


def load_masks(path: str | os.PathLike) -> np.ndarray:
    """Return an (N, H, W) bool array."""
    with gzip.open(path, "rb") as gz:
        return np.load(io.BytesIO(gz.read()), allow_pickle=False).astype(bool)
