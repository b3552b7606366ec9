"""The AVGen part of `make gpu-check`, at tiny width on the CPU: the same code the GPU runs at 3.8B."""
from __future__ import annotations

import json
import re
import subprocess
import sys

from genbuild.workflow import ROOT


def test_tiny_gpu_check_measures_a_step_and_a_sample(tmp_path):
    res = subprocess.run([sys.executable, "-m", "avgen.bench.gpu_check", "--tiny", "--out", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert re.fullmatch(r"avgen_train_step_s=[\d.]+ seconds_per_sample=[\d.]+", res.stdout.strip().splitlines()[-1])
    doc = json.loads((tmp_path / "avgen_gpu_check.json").read_text())
    sample = doc["sections"]["sample"]
    assert doc["preset"] == "tiny" and doc["sections"]["train_step"]["params"] > 0
    assert sample["seconds_per_sample"] >= sample["sampling_s"] > 0
