"""`make bench-train`'s measurement runs on a real latent cache and reports both rates."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from test_checkpoint import MODEL, TD, TEACHER, make_tiny_latents

from pvtt.bench.train import bench


@pytest.mark.slow  # a training run: make test, not test-fast
def test_bench_reports_loader_and_step_rates(tmp_path):
    lat = make_tiny_latents(tmp_path)
    params = {"model": MODEL, "train_data": TD, "teacher": TEACHER}
    r = bench(lat, params, loader_batches=20, steps=3, warmup=1)
    assert r["preset"] == "tiny" and r["train_triplets"] == 6 and r["batch_size"] == TEACHER["batch_size"]
    assert r["loader_samples_per_s"] > 0 and r["step_samples_per_s"] > 0
    assert abs(r["loader_to_step"] - r["loader_samples_per_s"] / r["step_samples_per_s"]) < 0.2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"pvtt": params}))  # namespaced, as in params.yaml
    out = subprocess.run([sys.executable, "-m", "pvtt.bench.train", "--latents", str(lat), "--params",
                          str(tmp_path / "params.yaml"), "--loader-batches", "10", "--steps", "2", "--threads", "1"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[-1].startswith("loader_to_step=") and float(out[-1].split("=")[1]) > 0
    assert json.loads(out[-2])["preset"] == "tiny"
    missing = subprocess.run([sys.executable, "-m", "pvtt.bench.train", "--latents", str(tmp_path / "nope")],
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "no latent cache" in missing.stderr
