"""AVGen stage 1 under torchrun with DeepSpeed ZeRO-2, as rules/avgen/train.smk launches it, on CPU:
unimodal batches leave half the network without gradients on a step, and the sharded update must
still follow the one-process loop."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from test_av_train import _params, features  # noqa: F401  (the synthetic features fixture)

from avgen.train.train import train_stage
from genbuild.workflow import ROOT

pytestmark = pytest.mark.slow  # DeepSpeed under torchrun: make test, not test-fast


def test_stage1_zero2_on_two_ranks_follows_the_plain_loop(features, tmp_path):  # noqa: F811
    params = _params("stage1", 4)
    params["train"]["common"]["checkpoint_every"] = 0
    train_stage("stage1", features, tmp_path / "plain", params)
    zero = json.loads(json.dumps(params))
    zero["train"]["common"]["deepspeed"] = str(ROOT / "configs/deepspeed/zero2.json")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "scripts/avgen_train.py"), "--params", json.dumps(zero), "--stage", "stage1", "--features",
           str(features), "--out", str(tmp_path / "zero2"), "--threads", "2"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    a = load_file(str(tmp_path / "plain/model/backbone/diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "zero2/model/backbone/diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
