"""Training checkpoints: periodic, atomic, fingerprinted, and resumed bit-identically on CPU.

A checkpoint is one file ``<dir>/step-<NNNNNNNN>-<fp16>.pt`` (``torch.save`` of a dict, loaded
back with ``weights_only=True``) holding:

- ``format`` (``pvtt-checkpoint/1``), ``stage``, ``step`` (optimiser steps completed) and the
  full ``fingerprint`` (sha256) of what changes the run's computation: the stage's params (less
  ``checkpoint_every``, which does not change the result), the hashes of its inputs (dataset
  manifest, init/teacher weights), the code files the caller names (the rule's; a Python file is
  hashed as its syntax tree without docstrings and comments, so editing those keeps a run
  resumable), and the world size (it changes the arithmetic: the per-rank batch split and the
  order of the gradient all-reduce);
- the training state the caller hands over (model(s), optimiser(s), EMA, loss rows...);
- ``rng``: every random state a later step may read: the torch global RNG, CUDA's when in
  use, Python's and NumPy's, and each named ``torch.Generator`` of the loop.

The file is written to a hidden temporary sibling, fsynced and renamed into place, so a
kill leaves either the previous checkpoint or the new one, never half of one. The directory
lives outside the rule's output (Snakemake deletes the outputs of failed jobs). On start the
newest checkpoint whose fingerprint matches is resumed. Checkpoints of other fingerprints
(another run sharing the directory, or one made before a params/data/code change) are logged
as ignored, naming them and why, and are kept: a save prunes only this run's own older
checkpoints beyond the newest ``keep``, and temporaries only of writers that are gone. Remove
the others explicitly::

    python -m genbuild.train.checkpoint prune DIR [--keep-fingerprint FP16] [--dry-run]

which removes every checkpoint in DIR whose fingerprint is not FP16 (by default that of the
newest checkpoint file), printing each one.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import json
import logging
import os
import random
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genbuild.io.atomic import atomic_path, fsync_path, remove_stale_temps
from genbuild.manifest import sha256_file

log = logging.getLogger(__name__)

FORMAT = "pvtt-checkpoint/1"
NAME_RE = re.compile(r"^step-(\d{8})-([0-9a-f]{16})\.pt$")
REPO_ROOT = Path(__file__).resolve().parents[2]
NOT_FINGERPRINTED = ("checkpoint_every",)


# -- fingerprint ---------------------------------------------------------------------------------
def _strip(params: Any) -> Any:
    if isinstance(params, dict):
        return {k: _strip(v) for k, v in params.items() if k not in NOT_FINGERPRINTED}
    return params


def dataset_identity(dataset_dir: str | os.PathLike, split: str = "train") -> dict:
    """What identifies a dataset: its manifest.json, or (without one) its split's shards."""
    d = Path(dataset_dir)
    if (d / "manifest.json").is_file():
        return {"manifest.json": sha256_file(d / "manifest.json")}
    shards = sorted((d / "shards").glob(f"{split}-*.tar"))
    return {s.name: sha256_file(s) for s in shards}


_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _is_docstring(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def code_hash(path: Path) -> str:
    """sha256 of what a code file computes: for Python, ``ast.dump`` of its parsed module with every
    docstring (module, class, function) dropped, so comments, docstrings and layout do not count;
    any other file (or Python that does not parse) by its bytes."""
    if path.suffix == ".py":
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError):
            return sha256_file(path)
        for node in ast.walk(tree):
            if isinstance(node, _DOCUMENTED) and node.body and _is_docstring(node.body[0]):
                node.body = node.body[1:]
        return "ast:" + hashlib.sha256(ast.dump(tree).encode()).hexdigest()
    return sha256_file(path)


def code_identity(code_files: Sequence[str]) -> dict:
    """Hashes of the code files a run executes (repo-relative paths, hashed relative to the repo root;
    a pipeline lists its rules' files, e.g. ``RULES[rule].code_files()``) by ``code_hash``; missing
    files are skipped."""
    return {f: code_hash(REPO_ROOT / f) for f in code_files if (REPO_ROOT / f).is_file()}


def fingerprint(stage: str, params: dict, inputs: dict, code_files: Sequence[str] = (), world_size: int = 1) -> str:
    """sha256 over params (less checkpoint_every), input identities, code hashes and world size.

    The code is passed in by the caller (the kit does not know a pipeline's rules): a checkpoint
    made by code that computes otherwise is not resumed (a comment or docstring edit does not
    count, see ``code_hash``). The world size is in it because it changes the arithmetic (how
    the batch splits over ranks, the order in which gradients are summed), so a run is resumed
    only at the size it was started with."""
    doc = {"stage": stage, "params": _strip(params), "inputs": inputs,
           "code": code_identity(code_files), "world_size": int(world_size)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


# -- random states -------------------------------------------------------------------------------
def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict:
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (np_name, torch.from_numpy(np.asarray(np_keys, dtype=np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)),
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generators: dict[str, torch.Generator] | None = None) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    saved = state.get("generators", {})
    for k, g in (generators or {}).items():
        if k not in saved:
            raise KeyError(f"checkpoint has no state for generator '{k}'")
        g.set_state(saved[k])


# -- the checkpoint directory --------------------------------------------------------------------
class Checkpointer:
    """Saves every ``every`` steps (and after the last) into ``directory``; finds the one to resume.

    ``directory=None`` or ``every=0`` turns checkpointing off. ``writer=False`` (ranks other than 0)
    never writes or removes anything.
    """

    def __init__(self, directory: str | os.PathLike | None, every: int, fp: str, stage: str,
                 keep: int = 2, writer: bool = True):
        self.directory = Path(directory) if directory else None
        self.every, self.fp, self.stage = int(every), fp, stage
        self.keep, self.writer = max(1, int(keep)), writer

    @property
    def enabled(self) -> bool:
        return self.directory is not None and self.every > 0

    def due(self, done: int, total: int) -> bool:
        return self.enabled and (done % self.every == 0 or done == total)

    def _files(self) -> list[tuple[int, str, Path]]:
        if self.directory is None or not self.directory.is_dir():
            return []
        out = []
        for p in self.directory.iterdir():
            m = NAME_RE.match(p.name)
            if m:
                out.append((int(m.group(1)), m.group(2), p))
        return sorted(out, key=lambda t: t[0], reverse=True)

    def find(self) -> Path | None:
        """The newest checkpoint of this run's fingerprint that loads; logs every one ignored."""
        if not self.enabled:
            return None
        for step, fp, path in self._files():
            if fp != self.fp[:16]:
                log.warning("%s: ignoring stale checkpoint %s: made with other params, data, code or world "
                            "size (fingerprint %s…, this run %s…); kept (remove it with `python -m "
                            "genbuild.train.checkpoint prune %s --keep-fingerprint %s`)",
                            self.stage, path, fp, self.fp[:16], path.parent, self.fp[:16])
                continue
            try:
                payload = self.load(path)
            except Exception as e:  # a damaged file: try the previous one
                log.warning("%s: ignoring unreadable checkpoint %s: %s", self.stage, path, e)
                continue
            if payload.get("format") != FORMAT or payload.get("fingerprint") != self.fp or payload.get("step") != step:
                log.warning("%s: ignoring checkpoint %s: format/fingerprint/step do not match", self.stage, path)
                continue
            return path
        return None

    @staticmethod
    def load(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
        return torch.load(path, map_location=map_location, weights_only=True)

    def save(self, done: int, state: dict) -> Path | None:
        if not (self.enabled and self.writer):
            return None
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        final = d / f"step-{done:08d}-{self.fp[:16]}.pt"
        payload = {"format": FORMAT, "stage": self.stage, "fingerprint": self.fp, "step": int(done), **state}
        with atomic_path(final) as tmp:  # fsynced, renamed, directory fsynced: a kill leaves old or new
            torch.save(payload, tmp)
        self._prune()
        log.info("%s: checkpoint at step %d -> %s", self.stage, done, final)
        return final

    def _prune(self) -> None:
        """Remove this run's own checkpoints beyond the newest ``keep`` (those of other fingerprints
        stay: see ``prune``), and the temporaries of writers that are gone."""
        ours = [path for _, fp, path in self._files() if fp == self.fp[:16]]
        for path in ours[self.keep:]:
            with contextlib.suppress(OSError):
                path.unlink()
        remove_stale_temps(self.directory, ".step-*.pt.tmp-*")  # left by a killed writer


def checkpoint_files(directory: str | os.PathLike) -> list[tuple[int, str, Path]]:
    """(step, fp16, path) of every checkpoint in ``directory``, newest step first."""
    return Checkpointer(directory, 1, "", "")._files()


def prune(directory: str | os.PathLike, keep_fingerprint: str | None = None, dry_run: bool = False) -> list[Path]:
    """Remove the checkpoints in ``directory`` whose fingerprint is not ``keep_fingerprint`` (its first
    16 hex digits suffice; by default that of the most recently written checkpoint). Returns them."""
    files = checkpoint_files(directory)
    if not files:
        return []
    keep = (keep_fingerprint or max(files, key=lambda t: t[2].stat().st_mtime)[1])[:16].lower()
    doomed = [path for _, fp, path in files if fp != keep]
    for path in doomed:
        if not dry_run:
            path.unlink()
    if doomed and not dry_run:
        fsync_path(Path(directory))
    return doomed


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m genbuild.train.checkpoint", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prune", help="remove the checkpoints of other fingerprints")
    pp.add_argument("directory", type=Path)
    pp.add_argument("--keep-fingerprint", metavar="FP16", default=None,
                    help="fingerprint to keep (16 hex digits, as in the file names; default: that of the newest file)")
    pp.add_argument("--dry-run", action="store_true", help="print what would be removed, remove nothing")
    args = ap.parse_args(argv)
    fp = args.keep_fingerprint
    if fp is not None and not re.fullmatch(r"[0-9a-fA-F]{16,64}", fp):
        ap.error(f"--keep-fingerprint {fp!r}: expected 16 hex digits")
    if not args.directory.is_dir():
        ap.error(f"{args.directory}: not a directory")
    removed = prune(args.directory, fp, args.dry_run)
    for path in removed:
        print(f"{'would remove' if args.dry_run else 'removed'} {path}")
    if not removed:
        print(f"nothing to remove in {args.directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
