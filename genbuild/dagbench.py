"""Dry-run timing of the whole DAG at a pipeline's full scale (`make bench-dag`), for any pipeline.

A pipeline's bench writes placeholder inputs at its full scale into a temporary copy of the
workflow (``copy_workflow``), sets params there, and calls ``dry_run`` on its own target: Snakemake
parses the Snakefile, builds the DAG and counts the jobs, without running one. Every other
registered pipeline is set to its embedded sample in the copy (``sample_others``), so one
pipeline's scale never needs another's inputs.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from genbuild.params import ROOT, deep_merge
from genbuild.workflow import pipelines

WORKFLOW = ("rules", "scripts", "schemas", "configs", "Snakefile")


def copy_workflow(dest: Path) -> dict:
    """The workflow and every package into ``dest``; returns params.yaml merged with configs/full.yaml."""
    for d in ("genbuild", *pipelines(), *WORKFLOW):
        src = ROOT / d
        if src.is_dir():
            shutil.copytree(src, dest / d, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / d)
    return deep_merge(yaml.safe_load((ROOT / "params.yaml").read_text()),
                      yaml.safe_load((ROOT / "configs" / "full.yaml").read_text()))


def sample_others(params: dict, keep: str) -> None:
    """Every pipeline but ``keep`` reads its generated sample (no external manifest needed to parse)."""
    for name in pipelines():
        if name != keep:
            params[name]["data"] = {**params[name]["data"], "source": "sample", "manifest": None}


def dry_run(dest: Path, params: dict, target: str) -> tuple[int, float, str]:
    """(jobs, seconds, output) of `snakemake -n <target>` in ``dest`` with ``params``."""
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    snakemake = Path(sys.executable).with_name("snakemake")
    t0 = time.perf_counter()
    res = subprocess.run([str(snakemake), "-n", "--cores", "all", target, "--quiet", "rules"], cwd=dest,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(dest)}, timeout=1800)
    seconds = time.perf_counter() - t0
    out = res.stdout + res.stderr
    if res.returncode != 0:
        raise RuntimeError(f"snakemake -n {target} failed:\n{out[-3000:]}")
    m = re.search(r"^total\s+(\d+)", out, re.M)
    return (int(m.group(1)) if m else -1), seconds, out
