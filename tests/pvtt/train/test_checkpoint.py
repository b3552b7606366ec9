"""Checkpoints and resume of the training loops, and the multi-process teacher launch.

Runs on a tiny synthetic dataset (real WebDataset shards with real mp4s, 32x32, 4 frames) so the
real loader, models and loops run in seconds. The bar is bit-identity on CPU: a run that crashed
and resumed from its checkpoint ends with the same weights (torch.equal on every tensor, same
model.safetensors bytes), loss table and metrics as one that never stopped.
"""
from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from genbuild.data.shards import write_tar
from genbuild.io.video import write_video
from genbuild.train.checkpoint import Checkpointer, fingerprint, rng_state, set_rng_state

ROOT = Path(__file__).resolve().parents[3]
TD = {"width": 32, "height": 32, "frames": 4, "frame_stride": 1, "reference_size": 32}
MODEL = {"preset": "tiny", "prediction": "source_residual"}
TEACHER = {"iterations": 12, "batch_size": 4, "lr": 1.0e-3, "warmup": 4, "cond_dropout": 0.25, "shift": 3.0,
           "seed": 0, "checkpoint_every": 4, "eval_every": 5, "eval_items": 2, "eval_steps": 3, "mask_loss_weight": 0.3}
# Every DMD2 term on, so that exact resume covers them (the GAN head and its optimiser state included).
COMMON = {"checkpoint_every": 2, "cfg_scale": 3.0, "critic_steps": 2, "fake_lr": 5.0e-4,
          "guidance_convention": "standard", "regression_weight": 0.25, "batch_size": 2,
          "losses": {"temporal": {"weight": 0.1}, "background": {"weight": 1.0}, "identity": {"weight": 0.1},
                     "adversarial": {"weight": 0.05, "block": -1}}}


def teacher_params(**over) -> dict:
    return {"model": MODEL, "train_data": TD, "teacher": {**TEACHER, **over}}


def student_params(**over) -> dict:
    return {"distill": {"common": COMMON, "student_4": {"steps": 4, "iterations": 6, "lr": 2.0e-4, **over}}}


METHODS = ("dmd2", "meanflow")


def _png(rgba: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def make_tiny_dataset(root: Path, n_train: int = 6, n_val: int = 3, size: int = 32, frames: int = 4) -> Path:
    """A dataset laid out as `pack` writes it: shards/{train,val}-000000.tar + manifest.json."""
    rng = np.random.default_rng(0)
    (root / "shards").mkdir(parents=True)
    yy, xx = np.mgrid[0:size, 0:size]
    for split, n in (("train", n_train), ("val", n_val)):
        members = []
        for i in range(n):
            key = f"{split}{i:03d}"
            phase = rng.uniform(0, 2 * np.pi, 3)
            src = np.stack([np.stack([127 + 100 * np.sin(xx / 5.0 + phase[c] + f / 2) for c in range(3)], -1)
                            for f in range(frames)]).clip(0, 255).astype(np.uint8)
            x0, y0 = rng.integers(4, size - 16, 2)
            color = rng.integers(0, 255, 3).astype(np.uint8)
            edited, mask = src.copy(), np.zeros((frames, size, size), np.uint8)
            edited[:, y0:y0 + 12, x0:x0 + 12] = color
            mask[:, y0:y0 + 12, x0:x0 + 12] = 1
            ref = np.zeros((24, 24, 4), np.uint8)
            ref[4:20, 4:20] = [*color, 255]
            vids = {}
            for name, arr in (("source", src), ("edited", edited)):
                write_video(root / f"{name}.mp4", arr, 24)
                vids[name] = (root / f"{name}.mp4").read_bytes()
                (root / f"{name}.mp4").unlink()
            npy = io.BytesIO()
            np.save(npy, mask)
            members += [(f"{key}.source.mp4", vids["source"]), (f"{key}.reference.png", _png(ref)),
                        (f"{key}.edited.mp4", vids["edited"]), (f"{key}.mask.npy", npy.getvalue()),
                        (f"{key}.caption.txt", f"a product of colour {color.tolist()}".encode()),
                        (f"{key}.json", json.dumps({"video": f"v{split}{i}"}).encode())]
        write_tar(root / "shards" / f"{split}-000000.tar", members)
    (root / "manifest.json").write_text(json.dumps({"stage": "dataset", "tiny": True}) + "\n")
    return root


def make_tiny_latents(root: Path) -> Path:
    """The tiny dataset under root/dataset, encoded by the latent cache stage into root/latents."""
    from pvtt.train.latents import encode_dataset

    encode_dataset(make_tiny_dataset(root / "dataset"), root / "latents", {"model": MODEL, "train_data": TD})
    return root / "latents"


def tensors_equal(a: Path, b: Path) -> bool:
    ta, tb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def assert_same_artifact(a: Path, b: Path, files=("model.safetensors", "loss.csv", "metrics.json")) -> None:
    assert tensors_equal(a, b)
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    for f in sorted(p.relative_to(a) for p in (a / "dvclive").rglob("*") if p.is_file()) if (a / "dvclive").is_dir() else []:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f  # DVCLive series and the sample animations


class Crash(Exception):
    pass


def crash_after(fn, calls: int):
    """Wrap ``fn`` so that its call number ``calls + 1`` raises: a crash in the middle of training."""
    count = {"n": 0}

    def wrapped(*a, **k):
        count["n"] += 1
        if count["n"] > calls:
            raise Crash(f"simulated crash at call {count['n']}")
        return fn(*a, **k)
    return wrapped


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the same arithmetic in every run, and no fight over 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread):
    """The tiny dataset's latent cache and one uninterrupted teacher run on it (no checkpoints)."""
    from pvtt.train.teacher import train_teacher

    base = tmp_path_factory.mktemp("ckpt")
    lat = make_tiny_latents(base)
    ref = base / "teacher_ref"
    train_teacher(lat, ref, teacher_params())
    return base, lat, ref


# ---------------------------------------------------------------------------------------- units
def test_checkpointer_atomic_keep_fallback_and_stale(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    ck = Checkpointer(tmp_path, 2, "a" * 64, "unit", keep=2)
    assert ck.find() is None
    assert [ck.due(s, 7) for s in range(1, 8)] == [False, True, False, True, False, True, True]
    stale = Checkpointer(tmp_path, 2, "b" * 64, "unit").save(8, {"x": torch.ones(2)})
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid no process has: a killed writer's
    (tmp_path / f".step-00000002-aaaaaaaaaaaaaaaa.pt.tmp-{gone.pid}").write_bytes(b"half")  # its leftover
    for step in (2, 4, 6):
        ck.save(step, {"x": torch.full((2,), float(step))})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["step-00000004-aaaaaaaaaaaaaaaa.pt", "step-00000006-aaaaaaaaaaaaaaaa.pt", stale.name], names
    assert stale.exists()  # another fingerprint's checkpoint is kept: only `prune` removes it
    found = ck.find()
    assert found.name.startswith("step-00000006") and torch.equal(Checkpointer.load(found)["x"], torch.full((2,), 6.0))
    found.write_bytes(found.read_bytes()[:100])  # damaged (e.g. disk full): fall back to the previous one
    assert ck.find().name.startswith("step-00000004")
    assert "ignoring unreadable checkpoint" in caplog.text
    assert Checkpointer(tmp_path, 2, "c" * 64, "unit").find() is None
    assert "ignoring stale checkpoint" in caplog.text
    assert Checkpointer(tmp_path, 0, "a" * 64, "unit").find() is None  # checkpoint_every 0: off
    assert Checkpointer(None, 2, "a" * 64, "unit").save(2, {}) is None


def test_fingerprint_ignores_only_the_checkpoint_cadence(tmp_path):
    inputs = {"dataset": {"manifest.json": "x"}}
    base = fingerprint("teacher", teacher_params(), inputs)
    assert fingerprint("teacher", teacher_params(checkpoint_every=100), inputs) == base
    assert fingerprint("teacher", teacher_params(lr=2e-3), inputs) != base
    assert fingerprint("teacher", teacher_params(), {"dataset": {"manifest.json": "y"}}) != base
    assert fingerprint("teacher", teacher_params(), inputs, world_size=2) != base


def test_rng_state_round_trip():
    import random

    g = torch.Generator().manual_seed(5)
    st = rng_state({"g": g})
    buf = io.BytesIO()
    torch.save(st, buf)
    buf.seek(0)
    st = torch.load(buf, weights_only=True)
    first = (torch.rand(4), torch.rand(4, generator=g), random.random(), np.random.rand())
    set_rng_state(st, {"g": g})
    again = (torch.rand(4), torch.rand(4, generator=g), random.random(), np.random.rand())
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1]) and first[2:] == again[2:]


# ------------------------------------------------------------------------------------ training
def test_teacher_crash_and_resume_is_bit_identical(tiny, tmp_path, monkeypatch, caplog):
    import pvtt.train.teacher as teacher

    _, lat, ref = tiny
    ck, out = tmp_path / "ck", tmp_path / "out"
    import genbuild.train.methods.flow_matching as fm  # the teacher's objective lives in its method
    monkeypatch.setattr(fm, "flow_matching_loss", crash_after(fm.flow_matching_loss, 6))
    with pytest.raises(Crash):
        teacher.train_teacher(lat, out, teacher_params(), ck)
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))  # nothing half-written at the output
    assert sorted(p.name[:13] for p in ck.glob("step-*.pt")) == ["step-00000004"]
    monkeypatch.undo()
    caplog.set_level(logging.INFO)
    teacher.train_teacher(lat, out, teacher_params(), ck)
    assert "resuming from step 4 of 12" in caplog.text
    assert_same_artifact(out, ref)
    # Other params: the checkpoint is logged as stale, not resumed, and kept (only `prune` removes it).
    caplog.clear()
    before = sorted(p.name for p in ck.glob("step-*.pt"))
    teacher.train_teacher(lat, tmp_path / "out2", teacher_params(lr=2e-3, iterations=4), ck)
    assert "ignoring stale checkpoint" in caplog.text and "resuming" not in caplog.text
    after = sorted(p.name for p in ck.glob("step-*.pt"))
    assert set(before) < set(after) and [n[:13] for n in set(after) - set(before)] == ["step-00000004"]
    assert not tensors_equal(tmp_path / "out2", ref)


@pytest.mark.parametrize("method", METHODS)
def test_distill_crash_and_resume_is_bit_identical(tiny, tmp_path, monkeypatch, caplog, method):
    import pvtt.train.distill as distill
    from genbuild.train.methods.dmd2 import DMD2
    from genbuild.train.methods.mean_flow import MeanFlow

    _, lat, teacher_dir = tiny
    full = tmp_path / "full"
    params = student_params(method=method)
    distill.distill_student(lat, teacher_dir, teacher_dir, "student_4", full, params)
    ck, out = tmp_path / "ck", tmp_path / "out"
    cls = DMD2 if method == "dmd2" else MeanFlow
    monkeypatch.setattr(cls, "train_step", crash_after(cls.train_step, 3))
    with pytest.raises(Crash):
        distill.distill_student(lat, teacher_dir, teacher_dir, "student_4", out, params, ck)
    assert not out.exists()
    assert sorted(p.name[:13] for p in ck.glob("step-*.pt")) == ["step-00000002"]
    monkeypatch.undo()
    caplog.set_level(logging.INFO)
    distill.distill_student(lat, teacher_dir, teacher_dir, "student_4", out, params, ck)
    assert "resuming from step 2 of 6" in caplog.text
    assert_same_artifact(out, full)


@pytest.mark.e2e
@pytest.mark.parametrize("method", METHODS)
def test_distill_sigkill_and_resume_is_bit_identical(tiny, tmp_path, method):
    """Each distillation method, killed by a real SIGKILL once a checkpoint is on disk, resumes to
    the bytes of an uninterrupted run."""
    _, lat, teacher_dir = tiny
    params = json.dumps(student_params(method=method, iterations=16))
    ck, out, ref = tmp_path / "ck", tmp_path / "out", tmp_path / "ref"
    cmd = [sys.executable, str(ROOT / "scripts/distill.py"), "--params", params, "--latents", str(lat), "--teacher",
           str(teacher_dir), "--init", str(teacher_dir), "--student", "student_4", "--threads", "1"]
    _kill_after_first_checkpoint(cmd + ["--out", str(out), "--checkpoint-dir", str(ck)], ck, tmp_path / "killed.log")
    assert not out.exists(), "killed before the end: no artifact"
    resumed = subprocess.run(cmd + ["--out", str(out), "--checkpoint-dir", str(ck)], capture_output=True, text=True, env=_env())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from step" in resumed.stderr
    full = subprocess.run(cmd + ["--out", str(ref)], capture_output=True, text=True, env=_env())
    assert full.returncode == 0, full.stderr[-3000:]
    assert_same_artifact(out, ref, files=("model.safetensors", "raw/model.safetensors", "loss.csv", "metrics.json"))


def test_meanflow_student_artifact_and_its_engine(tiny, tmp_path):
    """A MeanFlow student holds the interval input (zero-initialised: it started as its init),
    names its method and counts its training cost; its ONNX engine takes the interval too and
    samples as PyTorch does."""
    import pvtt.train.distill as distill
    from genbuild.train.flow import sample
    from pvtt.deploy.engine import OnnxDenoiser, export_onnx
    from pvtt.models.dit import PVTTDiT
    from pvtt.train.latents import load_latents

    _, lat, teacher_dir = tiny
    out = tmp_path / "mf"
    m = distill.distill_student(lat, teacher_dir, teacher_dir, "student_4", out, student_params(method="meanflow"))
    # the task's terms act on the one-jump x0 as on DMD2's (not the GAN: it needs DMD2's fake score)
    assert m["method"] == "meanflow" and m["losses"] == ["loss", "mse", "interval_mse", "regression", "temporal",
                                                         "background", "identity"]
    # per iteration and sample (batch 2): the teacher twice (CFG 3), two finite-difference passes, the
    # student's own two (the MeanFlow output and the one-jump x0 of the terms), both kept for backward
    assert m["training_cost"] == {"forward_samples": 6 * 2 * 6, "backward_samples": 6 * 2 * 2,
                                  "forward_equivalents": 6 * 2 * 10}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["average_velocity"] and cfg["method"] == "meanflow" and cfg["steps"] == 4
    model = PVTTDiT.load(out)
    teacher = PVTTDiT.load(teacher_dir)
    assert {k for k in model.state_dict()} - set(teacher.state_dict()) == {
        "interval_embedding.0.weight", "interval_embedding.0.bias", "interval_embedding.2.weight", "interval_embedding.2.bias"}
    _, val = load_latents(lat, cfg["components"])
    cond = val.cond.select(slice(0, 1))
    noise = torch.randn(val.target[:1].shape, generator=torch.Generator().manual_seed(0))
    example = (noise, torch.tensor([500.0]), cond.source, cond.mask, cond.image_tokens, cond.text_tokens,
               torch.tensor([250.0]))
    with torch.no_grad():  # the interval changes the output once trained
        assert not torch.allclose(model(*example), model(*example[:-1]))
    export_onnx(model, example, tmp_path / "mf.onnx", 17)
    ort = OnnxDenoiser(tmp_path / "mf.onnx")
    assert ort.average_velocity
    a, b = sample(model.eval(), cond, noise, 4, 3.0), sample(ort, cond, noise, 4, 3.0)
    assert (a - b).abs().max().item() < 1e-3


def test_an_unknown_method_stops_naming_the_key(tiny, tmp_path):
    import pvtt.train.distill as distill

    _, lat, teacher_dir = tiny
    with pytest.raises(ValueError, match=r"distill.student_4.method: unknown 'rcm'"):
        distill.distill_student(lat, teacher_dir, teacher_dir, "student_4", tmp_path / "x", student_params(method="rcm"))


def _env() -> dict:
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}:{e.get('PATH', '')}"
    e["PYTHONUNBUFFERED"] = "1"
    return e


def _kill_after_first_checkpoint(cmd: list[str], ck: Path, log_path: Path) -> None:
    """Start ``cmd`` and SIGKILL it as soon as a checkpoint is in ``ck`` (before it ends)."""
    with open(log_path, "w") as log1:
        proc = subprocess.Popen(cmd, stdout=log1, stderr=log1, env=_env())
        deadline = time.time() + 120
        while not list(ck.glob("step-*.pt")) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, log_path.read_text()[-2000:]


@pytest.mark.e2e
def test_teacher_sigkill_and_resume_is_bit_identical(tiny, tmp_path):
    """A real SIGKILL of the training process once a checkpoint is on disk; the rerun resumes."""
    _, lat, _ = tiny
    params = json.dumps(teacher_params(iterations=24, checkpoint_every=2))
    ck, out, ref = tmp_path / "ck", tmp_path / "out", tmp_path / "ref"
    cmd = [sys.executable, str(ROOT / "scripts/teacher.py"), "--params", params, "--latents", str(lat), "--threads", "1"]
    _kill_after_first_checkpoint(cmd + ["--out", str(out), "--checkpoint-dir", str(ck)], ck, tmp_path / "killed.log")
    assert not out.exists(), "killed before the end: no artifact"
    resumed = subprocess.run(cmd + ["--out", str(out), "--checkpoint-dir", str(ck)], capture_output=True, text=True, env=_env())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from step" in resumed.stderr
    step = int(resumed.stderr.split("resuming from step ")[1].split()[0])
    assert 2 <= step < 24
    full = subprocess.run(cmd + ["--out", str(ref)], capture_output=True, text=True, env=_env())
    assert full.returncode == 0, full.stderr[-3000:]
    assert_same_artifact(out, ref, files=("model.safetensors", "loss.csv", "metrics.json", "manifest.json"))


def _torchrun_two(tmp_path: Path, script: str, params: dict, *args: str) -> str:
    """Run scripts/<script> under torchrun --nproc_per_node 2 with out/ and ck/ in tmp_path; its log."""
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(ROOT / "scripts" / script), "--params", json.dumps(params), *args,
                          "--out", str(tmp_path / "out"), "--threads", "2", "--checkpoint-dir", str(tmp_path / "ck")],
                         capture_output=True, text=True, env=_env(), timeout=300)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-4000:]
    assert "(2 processes)" in log
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"model.safetensors", "config.json", "loss.csv",
                                                              "metrics.json", "manifest.json"}
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    return log


@pytest.mark.slow  # several processes: make test, not test-fast
def test_torchrun_two_processes_on_cpu(tiny, tmp_path):
    """torchrun --nproc_per_node 2 (gloo): both ranks train on halves of each batch, rank 0 writes;
    the gradient of the whole batch is what one process computes, so the losses agree closely."""
    _, lat, ref = tiny
    out, ck = tmp_path / "out", tmp_path / "ck"
    log = _torchrun_two(tmp_path, "teacher.py", teacher_params(), "--latents", str(lat))
    assert "teacher: rank 0 of 2 (cpu, backend gloo)" in log
    assert sorted(p.name[:13] for p in ck.glob("step-*.pt")) == ["step-00000008", "step-00000012"]
    assert not list(tmp_path.glob(".out.tmp-*"))
    got = [row.split(",") for row in (out / "loss.csv").read_text().splitlines()[1:]]
    want = [row.split(",") for row in (ref / "loss.csv").read_text().splitlines()[1:]]
    assert len(got) == len(want) == TEACHER["iterations"]
    for g, w in zip(got, want):
        assert abs(float(g[1]) - float(w[1])) <= 1e-4 * max(1.0, abs(float(w[1]))), (g, w)
    a, b = load_file(str(out / "model.safetensors")), load_file(str(ref / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-3


@pytest.mark.slow  # several processes: make test, not test-fast
def test_distill_torchrun_two_processes_on_cpu(tiny, tmp_path):
    """DMD2 under torchrun --nproc_per_node 2 (gloo): the same noise is drawn at the global batch size
    on both ranks, each trains on its half, and the generator's and fake score's gradients are summed,
    so the run follows the one-process run up to float summation order."""
    import pvtt.train.distill as distill

    _, lat, teacher_dir = tiny
    ref = tmp_path / "ref"
    distill.distill_student(lat, teacher_dir, teacher_dir, "student_4", ref, student_params())
    out, ck = tmp_path / "out", tmp_path / "ck"
    log = _torchrun_two(tmp_path, "distill.py", student_params(), "--latents", str(lat), "--teacher", str(teacher_dir),
                        "--init", str(teacher_dir), "--student", "student_4")
    assert "student_4: rank 0 of 2 (cpu, backend gloo)" in log
    assert sorted(p.name[:13] for p in ck.glob("step-*.pt")) == ["step-00000004", "step-00000006"]
    got = [row.split(",") for row in (out / "loss.csv").read_text().splitlines()[1:]]
    want = [row.split(",") for row in (ref / "loss.csv").read_text().splitlines()[1:]]
    assert len(got) == len(want) == 6
    for g, w in zip(got, want):
        for col in (1, 2, 3):  # dmd, regression, critic
            assert abs(float(g[col]) - float(w[col])) <= 1e-3 * max(1.0, abs(float(w[col]))), (g, w)
    a, b = load_file(str(out / "model.safetensors")), load_file(str(ref / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-3


def test_accumulation_checkpointing_and_bf16(tiny, tmp_path):
    """grad_accum 2 of batch 2 is one update on 4 samples (not the same draws as batch 4, so compared
    for sanity, not equality); gradient checkpointing changes memory, not arithmetic; bf16 autocast
    follows the fp32 run's losses closely on CPU, and the saved weights stay fp32."""
    from pvtt.train.teacher import train_teacher

    _, lat, ref = tiny
    plain = tmp_path / "plain"
    train_teacher(lat, plain, teacher_params(iterations=4))
    ckpt = tmp_path / "ckpt"
    train_teacher(lat, ckpt, teacher_params(iterations=4, gradient_checkpointing=True))
    a, b = load_file(str(plain / "model.safetensors")), load_file(str(ckpt / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    acc = tmp_path / "acc"
    m = train_teacher(lat, acc, teacher_params(iterations=4, batch_size=2, grad_accum=2))
    assert m["iterations"] == 4 and len((acc / "loss.csv").read_text().splitlines()) == 5
    assert not tensors_equal(acc, plain)
    bf = tmp_path / "bf16"
    m = train_teacher(lat, bf, teacher_params(precision="bf16"))
    want = json.loads((ref / "metrics.json").read_text())
    for k in ("train_loss_first", "train_loss_last", "val_loss_after"):
        assert np.isfinite(m[k]) and abs(m[k] - want[k]) <= 0.05 * want[k], (k, m[k], want[k])
    assert not tensors_equal(bf, ref), "bf16 autocast did run in lower precision"
    assert load_file(str(bf / "model.safetensors"))["wan.head.head.weight"].dtype == torch.float32


def _gated(max_drop: float) -> dict:
    p = student_params(iterations=2)
    p["distill"]["gate"] = {"max_drop": max_drop, "items": 2, "teacher_steps": 4}
    p["eval"] = {"cfg_scale": 1.0}
    return p


def test_quality_gate_passes_into_metrics_or_stops_the_student_naming_the_metric(tiny, tmp_path):
    """A passing student carries the gate's numbers in metrics.json; a failing one leaves no
    artifact, and the error and the report outside the output name each metric and its numbers."""
    import pvtt.train.distill as distill
    from pvtt.train.gate import GateFailed

    _, lat, teacher_dir = tiny
    distill.distill_student(lat, teacher_dir, teacher_dir, "student_4", tmp_path / "ok", _gated(100.0),
                            gate_report=tmp_path / "ok.json")
    gate = json.loads((tmp_path / "ok/metrics.json").read_text())["gate"]
    assert gate["passed"] and gate["failed"] == []
    assert json.loads((tmp_path / "ok.json").read_text()) == {"student": "student_4", **gate}
    assert {"psnr", "mask_psnr", "bg_psnr", "ref_sim", "temporal_consistency"} <= set(gate["relative_drop"])
    with pytest.raises(GateFailed, match=r"student_4 fails the quality gate .*mask_psnr: teacher [\d.]+, student_4 [\d.]+, drop"):
        distill.distill_student(lat, teacher_dir, teacher_dir, "student_4", tmp_path / "bad", _gated(-1.0),
                                gate_report=tmp_path / "bad.json")
    assert not (tmp_path / "bad").exists()
    report = json.loads((tmp_path / "bad.json").read_text())
    assert not report["passed"] and "psnr" in report["failed"] and report["teacher"]["psnr"] > 0
