"""Milestone manifests: what an artifact was built from, so that any artifact is traceable.

``manifest.json`` lists the hashes of the inputs, the params read, the code version and
counts. It holds no timestamps, so rebuilding from the same inputs gives the same bytes.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

from genbuild.imports import repo_packages
from genbuild.io.jsonio import write_json

REPO = Path(__file__).resolve().parents[1]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_path(path: str | os.PathLike) -> str:
    """Hash a file, or a directory as the sorted list of (relative path, file hash)."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file() and not x.name.startswith(".")):
        h.update(f"{f.relative_to(p).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def code_version() -> dict:
    """The source hash of the kit and every pipeline package (always) and the git revision (in a checkout)."""
    src = hashlib.sha256()
    for f in sorted(f for pkg in repo_packages(REPO) for f in (REPO / pkg).rglob("*.py")):
        src.update(f"{f.relative_to(REPO).as_posix()}\0".encode() + f.read_bytes())
    rev = None
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        if res.returncode == 0:
            rev = res.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"package_sha256": src.hexdigest(), "git_rev": rev}


def write_manifest(out_dir: str | os.PathLike, stage: str, params: dict, inputs: Iterable[str | os.PathLike],
                   counts: dict, extra: dict | None = None) -> dict:
    manifest = {
        "stage": stage,
        "inputs": {str(Path(i).as_posix()): sha256_path(i) for i in sorted(map(str, inputs))},
        "params": params,
        "code": code_version(),
        "counts": counts,
    }
    if extra:
        manifest.update(extra)
    write_json(Path(out_dir) / "manifest.json", manifest)
    return manifest
