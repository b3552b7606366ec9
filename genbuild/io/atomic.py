"""Atomic, durable outputs: a stage writes into a temporary sibling and renames it into place.

A killed job therefore never leaves a half-written artifact at the path Snakemake or DVC
looks at; at worst a hidden ``.name.tmp-PID`` sibling remains, which a later run removes once
process PID is gone (a temporary sibling of a live process, e.g. a concurrent writer of the
same output, is left alone).

Durability: before the rename the written data is fsynced (a file output, or for a directory
output every file inside it and every directory in it), and after the rename the parent
directory is fsynced, so that after a power loss the path holds either the old output or the
whole new one, never a renamed but empty or truncated file.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def pid_alive(pid: int) -> bool:
    """Whether another process ``pid`` exists (our own pid counts as not alive: its temporary
    files are leftovers of an earlier attempt in this process)."""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by another user
        return True
    return True


_TMP_PID = re.compile(r"\.tmp-(\d+)$")


def remove_stale_temps(parent: Path, pattern: str) -> list[Path]:
    """Remove the ``<pattern>`` temporaries in ``parent`` (names ending ``.tmp-PID``) whose writer
    is gone; those of a live other process, or without a pid, are kept. Returns what was removed."""
    removed = []
    for stale in parent.glob(pattern):
        m = _TMP_PID.search(stale.name)
        if m is None or pid_alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            _remove(stale)
            removed.append(stale)
    return removed


def _clean_stale_siblings(final: Path) -> None:
    remove_stale_temps(final.parent, f".{final.name}.tmp-*")


_NO_FSYNC = (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP)


def fsync_path(path: Path) -> None:
    """fsync a file, or a directory itself (its entries); errors of file systems that refuse
    to fsync a directory are ignored."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if path.is_dir():
            return
        raise
    try:
        os.fsync(fd)
    except OSError as e:  # a directory, or a file system without fsync: nothing more to do
        if not (path.is_dir() or e.errno in _NO_FSYNC):
            raise
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync a file, or every file and directory under a directory (symlinks are not followed)."""
    if path.is_symlink():
        return
    if not path.is_dir():
        fsync_path(path)
        return
    for root, _dirs, files in os.walk(path):
        for name in files:
            p = Path(root) / name
            if not p.is_symlink():
                fsync_path(p)
        fsync_path(Path(root))


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path; on success it is fsynced and replaces ``final`` in one rename.

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
        if tmp.exists() or tmp.is_symlink():
            fsync_tree(tmp)
        if directory and final.exists():
            _remove(final)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            _remove(tmp)
        raise
    fsync_path(final.parent)


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """``dst`` as a hard link of ``src`` (no bytes copied, same inode), or a copy where the file
    system cannot link (another device, no link support)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))
