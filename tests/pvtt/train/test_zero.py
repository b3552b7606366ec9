"""DeepSpeed ZeRO-2 for the teacher, launched as the rule launches it (torchrun), on CPU.

DeepSpeed's CPU accelerator compiles its shared-memory collective op on first use (about
2 minutes on 2 cores, cached in ~/.cache/torch_extensions); the tests below share it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file
from test_checkpoint import ROOT, _env, make_tiny_latents, teacher_params

ZERO2 = str(ROOT / "configs/deepspeed/zero2.json")
pytestmark = pytest.mark.slow        # DeepSpeed under torchrun, several full runs: make test, not test-fast


def _launch(work, params: dict, nproc: int, name: str, ck=None):
    """The teacher under torchrun, as rules/teacher.smk starts it, on work/lat; output work/<name>."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            str(ROOT / "scripts/teacher.py"), "--params", json.dumps(params), "--latents", str(work / "lat"),
            "--out", str(work / name), "--threads", "2"] + (["--checkpoint-dir", str(ck)] if ck else [])


@pytest.fixture
def work(tmp_path):
    """tmp_path with the tiny latent cache in lat/; the runs write beside it."""
    import torch

    torch.set_num_threads(1)
    make_tiny_latents(tmp_path / "src").rename(tmp_path / "lat")
    return tmp_path


def _weights_close(a, b, tol):
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return wa.keys() == wb.keys() and max((wa[k] - wb[k]).abs().max().item() for k in wa) < tol


@pytest.mark.e2e
def test_zero2_two_ranks_follow_the_plain_loop(work):
    """2 ranks, ZeRO-2 (optimiser state sharded), 2 accumulation steps: the same training as the
    one-process loop (same global batch), up to float summation order."""
    from pvtt.train.teacher import train_teacher

    params = teacher_params(grad_accum=2, eval_every=0, checkpoint_every=0)
    train_teacher(work / "lat", work / "plain", params)
    res = subprocess.run(_launch(work, {**params, "teacher": {**params["teacher"], "deepspeed": ZERO2}}, 2, "zero2"),
                         capture_output=True, text=True, env=_env(), timeout=900)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-4000:]
    assert "DeepSpeed ZeRO stage 2: micro-batch 2 per rank, 2 accumulation steps" in log
    got = [float(row.split(",")[1]) for row in (work / "zero2/loss.csv").read_text().splitlines()[1:]]
    want = [float(row.split(",")[1]) for row in (work / "plain/loss.csv").read_text().splitlines()[1:]]
    assert len(got) == len(want) and max(abs(g - w) / max(1.0, abs(w)) for g, w in zip(got, want)) < 1e-4
    assert _weights_close(work / "zero2", work / "plain", 1e-3)


@pytest.mark.e2e
def test_zero2_killed_run_resumes_from_its_deepspeed_checkpoint(work):
    params = teacher_params(iterations=16, checkpoint_every=2, eval_every=0)
    params["teacher"]["deepspeed"] = ZERO2
    ck = work / "ck"
    proc = subprocess.Popen(_launch(work, params, 1, "out", ck), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=_env(), start_new_session=True)
    deadline = time.time() + 600
    while not (ck / "deepspeed/latest").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (work / "out").exists(), "killed before the end: no artifact"
    res = subprocess.run(_launch(work, params, 1, "out", ck), capture_output=True, text=True, env=_env(), timeout=900)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    step = int((res.stdout + res.stderr).split("resuming from step ")[1].split()[0])
    assert 2 <= step < 16
    full = subprocess.run(_launch(work, params, 1, "ref"), capture_output=True, text=True, env=_env(), timeout=900)
    assert full.returncode == 0, (full.stdout + full.stderr)[-4000:]
    assert (work / "out/loss.csv").read_text() == (work / "ref/loss.csv").read_text()
    assert _weights_close(work / "out", work / "ref", 1e-6)
