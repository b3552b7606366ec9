"""Local weight files: the one place that says where a real backend's weights must be.

Machines here are offline, so a real backend never downloads; a missing file stops with an
error that names the path and how to get it.
"""
from __future__ import annotations

from pathlib import Path


class MissingWeightsError(FileNotFoundError):
    pass


def require_weights(path: str | Path | None, what: str) -> Path:
    if not path:
        raise MissingWeightsError(f"{what}: no weights path configured (set the params key's 'path')")
    p = Path(path)
    if not p.exists():
        raise MissingWeightsError(
            f"{what}: weights not found at '{p}'. Fetch them with `dvc pull {p}` (or place the "
            f"file there) and point the params key at it; nothing is downloaded at run time.")
    return p


class WeightsError(ValueError):
    """A weights file that exists but does not load into the model built for it."""


def weights_error(what: str, path: str | Path, key: str, problem: str, cause: BaseException) -> WeightsError:
    """The error for a configured file that is there but wrong: names the file, the params key and why."""
    return WeightsError(f"{what}: the weights at '{path}' (params {key}) {problem}: {cause.__class__.__name__}: {cause}")
