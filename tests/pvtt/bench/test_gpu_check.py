"""`make gpu-check TINY=1`: the GPU check's own code at tiny width on the CPU, as a subprocess.

Every section must pass here, so the prepared script is known to run before a GPU machine is
spent on it. The ZeRO-2 section initialises DeepSpeed's CPU accelerator, which compiles its
shared-memory collective op when ~/.cache/torch_extensions has no build for this environment (about
a minute on 2 cores, as in tests/pvtt/train/test_zero.py); the rest takes under a minute.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pvtt.bench import gpu_check_dit as D

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
SECTIONS = {"teacher_eager", "teacher_compile", "teacher_zero2", "dmd2_step", "vae", "inference", "backend_wan_vace", "backend_wan_i2v",
            "backend_flux", "backend_grounded_sam2", "backend_qwen2vl", "backend_metrics", "backend_pvtt_encoders"}
TEACHER_KEYS = {"step_s", "first_step_s", "peak_mem_gib", "loss", "params", "trainable_params", "forward_tflop",
                "model_tflop_per_step", "hardware_tflop_per_step", "achieved_tflops", "mfu", "hfu", "tokens", "wall_s"}


def test_flops_of_the_full_shape_match_the_measured_anchor():
    """DESIGN §5: one 1.3B forward at 480x832x81 with image tokens is about 280 TFLOP."""
    shape = D.full_shape()
    assert shape.latent == (21, 60, 104) and shape.tokens == 21 * 30 * 52
    assert shape.arch["dim"] == 1536 and shape.arch["num_layers"] == 30 and shape.arch["ffn_dim"] == 8960
    assert 270e12 < D.dit_forward_flops(shape) < 300e12
    assert D.dit_forward_flops(shape, lora_rank=64) > D.dit_forward_flops(shape)
    u = D.utilisation(100e12, 3, 1, 1.0, 1000.0)
    assert u["mfu"] == 0.3 and u["hfu"] == 0.4 and u["achieved_tflops"] == 300.0


def test_flops_count_agrees_with_torch_flop_counter():
    """The analytic matmul count equals torch's FlopCounterMode on a real forward (which, on the CPU,
    does not see the fused attention kernel: the attention term is added analytically)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    shape = D.tiny_shape()
    dit = D.new_dit(shape, torch.device("cpu")).eval()
    x0, cond = D.batch(shape)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        cond.denoise(dit, x0, torch.tensor([500.0]))
    matmuls = D.dit_forward_flops(shape) - D.dit_attention_flops(shape)
    assert abs(fc.get_total_flops() - matmuls) <= 0.01 * matmuls


def test_peak_table_reads_the_device_name(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H100 PCIe")
    assert D.peak_tflops(torch.device("cuda"))[0] == 756.0
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H200")
    assert D.peak_tflops(torch.device("cuda"))[0] == 989.4
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA B200")
    peak, why = D.peak_tflops(torch.device("cuda"))
    assert peak is None and "not in the peak table" in why
    assert D.peak_tflops(torch.device("cpu"))[0] is None


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    res = subprocess.run([sys.executable, "-m", "pvtt.bench.gpu_check", "--tiny", "--out", str(out), "--device", "cpu"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    return res, out


def test_tiny_run_passes_every_section_and_writes_json_and_table(tiny_run):
    res, out = tiny_run
    doc = json.loads((out / "gpu_check.json").read_text())
    failed = {k: v["error"] for k, v in doc["sections"].items() if not v["ok"]}
    assert res.returncode == 0 and not failed, f"{failed}\n{res.stderr[-3000:]}"
    assert set(doc["sections"]) == SECTIONS and doc["ok"] and doc["complete"] and doc["mode"] == "tiny"
    assert {"rembg", "tensorrt_engine"} <= set(doc["omitted"])
    assert {"mfu", "peak_mem_gib", "step_s", "compile_s"} <= set(doc["units"])
    assert {"name", "torch", "peak_bf16_tflops", "peak_source", "packages"} <= set(doc["device"])
    assert doc["shape"]["latent"] == [3, 8, 8] and doc["shape"]["tokens"] == 48
    s = doc["sections"]
    for name in ("teacher_eager", "teacher_compile", "teacher_zero2"):
        assert TEACHER_KEYS <= set(s[name]), name
        assert s[name]["step_s"] > 0 and s[name]["trainable_params"] < s[name]["params"]
    assert s["teacher_compile"]["compile_backend"] == "aot_eager" and s["teacher_compile"]["compile_s"] >= 0
    assert s["teacher_zero2"]["zero_stage"] == 2
    # the same weights, batches and noise: the compiled steps end at the eager steps' loss
    assert s["teacher_compile"]["loss"] == pytest.approx(s["teacher_eager"]["loss"], rel=0.05)
    assert s["dmd2_step"]["critic_steps"] == 5 and s["dmd2_step"]["step_s"] > 0
    assert s["vae"]["latent"] == [3, 8, 8] and s["vae"]["finite"] and s["vae"]["encode_s"] > 0
    inf = s["inference"]  # teacher 50 steps + CFG vs the 4-step student, each with the VAE decode
    assert inf["teacher_steps"] == 50 and inf["student_steps"] == 4 and inf["attention_fastest"] == "sdpa"
    assert inf["teacher_total_s"] > inf["student_total_s"] > inf["vae_decode_s"] > 0 and inf["speedup_end_to_end"] > 1
    assert all(s[k]["device"] == "cpu" and s[k]["seconds"] > 0 for k in SECTIONS if k.startswith("backend_"))
    table = (out / "table.md").read_text()
    assert all(f"| {k} | ok |" in table for k in SECTIONS) and "| backend_rembg | omitted |" in table
    last = res.stdout.strip().splitlines()[-1]
    pairs = dict(p.split("=") for p in last.split())
    assert pairs["failed"] == "0" and float(pairs["teacher_step_s"]) > 0 and pairs["mfu"] == "na"
    assert float(pairs["dmd2_step_s"]) > 0 and float(pairs["vae_decode_s"]) > 0 and float(pairs["infer_speedup"]) > 1


def test_a_failing_section_is_recorded_and_fails_the_exit_code(tmp_path):
    res = subprocess.run([sys.executable, "-m", "pvtt.bench.gpu_check", "--tiny", "--out", str(tmp_path), "--device", "cpu",
                          "--only", "backend_qwen2vl", "teacher_compile", "--compile-backend", "no_such_backend"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    doc = json.loads((tmp_path / "gpu_check.json").read_text())
    assert res.returncode == 1 and not doc["ok"]
    assert doc["sections"]["backend_qwen2vl"]["ok"], "the other sections still run"
    bad = doc["sections"]["teacher_compile"]
    assert not bad["ok"] and "no_such_backend" in bad["error"] and bad["traceback"]
    assert "| teacher_compile | **failed** |" in (tmp_path / "table.md").read_text()
    assert res.stdout.strip().splitlines()[-1].endswith("failed=1")
