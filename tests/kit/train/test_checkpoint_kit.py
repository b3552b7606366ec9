"""genbuild.train.checkpoint and genbuild.train.zero, without a training loop or DeepSpeed launch:
what is kept, pruned and resumed, and what the fingerprint counts."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genbuild.train import checkpoint, zero
from genbuild.train.checkpoint import REPO_ROOT, Checkpointer, fingerprint

A, B = "a" * 64, "b" * 64


# ----------------------------------------------------------------------------- DeepSpeed resume
class FakeEngine:
    """Records what DeepSpeed's engine is asked to do; saves the client state as DeepSpeed lays it out
    (a directory per tag, then ``latest`` naming the tag, written by rank 0)."""

    global_rank = 0

    def __init__(self):
        self.loaded: list[str | None] = []

    def save_checkpoint(self, save_dir, tag, client_state):
        d = Path(save_dir) / tag
        d.mkdir(parents=True, exist_ok=True)
        torch.save(client_state, d / "client.pt")
        (Path(save_dir) / "latest").write_text(tag)

    def load_checkpoint(self, load_dir, tag=None, **kw):
        tag = tag or (Path(load_dir) / "latest").read_text().strip()
        self.loaded.append(tag)  # from here on the engine holds that checkpoint's weights and optimiser
        return str(Path(load_dir) / tag), torch.load(Path(load_dir) / tag / "client.pt", weights_only=True)


def test_zero_resume_never_loads_another_runs_checkpoint(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    d = tmp_path / "deepspeed"
    zero.save(FakeEngine(), d, 4, {"step": 4, "fp": B})
    engine = FakeEngine()
    assert zero.resume(engine, d, A) is None
    assert engine.loaded == [], "a checkpoint of another fingerprint was loaded into the engine"
    assert "another run" in caplog.text and B[:16] in caplog.text and A[:16] in caplog.text


def test_zero_resume_loads_its_own_checkpoint(tmp_path):
    d = tmp_path / "deepspeed"
    assert zero.resume(FakeEngine(), d, A) is None  # nothing saved yet
    zero.save(FakeEngine(), d, 4, {"step": 4, "fp": A})
    zero.save(FakeEngine(), d, 8, {"step": 8, "fp": A})
    tag = (d / "latest").read_text()
    assert json.loads((d / tag / zero.SIDECAR).read_text())["fp"] == A
    engine = FakeEngine()
    state = zero.resume(engine, d, A)
    assert state["step"] == 8 and engine.loaded == [tag]


def test_zero_resume_without_sidecar_is_not_loaded(tmp_path, caplog):
    d = tmp_path / "deepspeed"
    FakeEngine().save_checkpoint(str(d), "step-00000004", {"step": 4, "fp": A})  # older code: no sidecar
    engine = FakeEngine()
    assert zero.resume(engine, d, A) is None and engine.loaded == []
    assert "no readable fingerprint" in caplog.text


# ------------------------------------------------------------------------------- plain checkpoints
def test_save_keeps_other_runs_checkpoints_and_live_writers_temps(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    other = Checkpointer(tmp_path, 2, B, "unit").save(8, {"x": torch.ones(2)})
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live_tmp = tmp_path / f".step-00000010-bbbbbbbbbbbbbbbb.pt.tmp-{child.pid}"
        live_tmp.write_bytes(b"another run, writing now")
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        dead_tmp = tmp_path / f".step-00000002-aaaaaaaaaaaaaaaa.pt.tmp-{gone.pid}"
        dead_tmp.write_bytes(b"half")
        ck = Checkpointer(tmp_path, 2, A, "unit", keep=2)
        for step in (2, 4, 6):
            ck.save(step, {"x": torch.full((2,), float(step))})
        assert live_tmp.exists() and not dead_tmp.exists()
    finally:
        child.kill()
        child.wait()
    names = sorted(p.name for p in tmp_path.glob("step-*.pt"))
    assert names == ["step-00000004-" + A[:16] + ".pt", "step-00000006-" + A[:16] + ".pt", other.name], names
    assert ck.find().name.startswith("step-00000006")
    assert f"ignoring stale checkpoint {other}" in caplog.text and "kept" in caplog.text
    assert Checkpointer(tmp_path, 2, B, "unit").find() == other  # the other run can still resume


def test_prune_entry_point_removes_other_fingerprints(tmp_path, capsys):
    old = Checkpointer(tmp_path, 2, B, "unit").save(8, {})
    ours = Checkpointer(tmp_path, 2, A, "unit").save(2, {})
    assert checkpoint.main(["prune", str(tmp_path), "--keep-fingerprint", A[:16], "--dry-run"]) == 0
    assert old.exists() and f"would remove {old}" in capsys.readouterr().out
    res = subprocess.run([sys.executable, "-m", "genbuild.train.checkpoint", "prune", str(tmp_path),
                          "--keep-fingerprint", A[:16]], capture_output=True, text=True, cwd=REPO_ROOT)
    assert res.returncode == 0, res.stderr
    assert f"removed {old}" in res.stdout and not old.exists() and ours.exists()
    os.utime(ours, (1, 1))
    newer = Checkpointer(tmp_path, 2, B, "unit").save(4, {})
    assert checkpoint.main(["prune", str(tmp_path)]) == 0  # default: keep the newest file's fingerprint
    assert newer.exists() and not ours.exists()
    with pytest.raises(SystemExit):
        checkpoint.main(["prune", str(tmp_path), "--keep-fingerprint", "nothex"])


# -------------------------------------------------------------------------------------- fingerprint
CODE = '''"""Module docstring."""
import math


def f(x):
    """Doc."""
    return math.sqrt(x) + 1  # a comment
'''


def test_fingerprint_ignores_comments_and_docstrings_not_code(tmp_path):
    src = tmp_path / "mod.py"
    src.write_text(CODE)
    fp = lambda **kw: fingerprint("s", {"lr": 1}, {}, [str(src)], **kw)  # noqa: E731
    base = fp()
    src.write_text(CODE.replace("a comment", "another comment").replace('"""Doc."""', '"""Other doc,\n    two lines."""')
                   .replace('"""Module docstring."""', "# header\n"))
    assert fp() == base, "a comment/docstring edit changed the fingerprint"
    src.write_text(CODE.replace("+ 1", "+ 2"))
    assert fp() != base
    src.write_text(CODE)
    assert fp() == base and fp(world_size=2) != base
    other = tmp_path / "notes.txt"
    other.write_text("x")
    base_txt = fingerprint("s", {}, {}, [str(other)])
    other.write_text("x ")
    assert fingerprint("s", {}, {}, [str(other)]) != base_txt  # non-Python files: by their bytes
