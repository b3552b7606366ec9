"""Atomic outputs: a stage writes into a temporary sibling and renames it into place.

A killed job therefore never leaves a half-written artifact at the path Snakemake or DVC
looks at; at worst a hidden ``.name.tmp-PID`` sibling remains, which the next run removes.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _clean_stale_siblings(final: Path) -> None:
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        with contextlib.suppress(OSError):
            _remove(stale)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``final`` in one rename.

    With ``directory=True`` the temporary path is created as an empty directory.
    On any exception the temporary path is removed and ``final`` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_siblings(final)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    _remove(tmp)
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        if directory and final.exists():
            _remove(final)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            _remove(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))
