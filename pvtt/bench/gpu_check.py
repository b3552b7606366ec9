"""`make gpu-check`: every GPU measurement of the project in one prepared script (a few minutes on one H100/H200).

    python -m pvtt.bench.gpu_check [--tiny] [--out DIR]

At the Wan2.1-1.3B shape with random weights and PVTT's conditioning (480 x 832, 81 frames ->
21 x 60 x 104 latents, 32,760 tokens; 257 image + 512 caption tokens), on the project's own classes
(``pvtt.bench.gpu_check_dit``):

- ``teacher_eager``: a teacher training step (LoRA r64, bf16 autocast, gradient checkpointing) under
  the kit's ``Trainer``: seconds, peak memory, MFU;
- ``teacher_compile``: the same with each DiT block ``torch.compile``d: compile time and steady step;
- ``teacher_zero2``: the same under DeepSpeed ZeRO-2 (configs/deepspeed/zero2.json) in one process;
- ``dmd2_step``: one DMD2 generator update (5 critic updates first, 4-step student, CFG 3);
- ``vae``: the Wan2.1 VAE encode and decode of the 81-frame clip;
- ``inference``: the teacher (50 steps, CFG 5: 100 calls) vs a 4-step student end to end with the VAE
  decode, the student eager, compiled, with FP8 weights and with the fastest attention kernel there;
- ``backend_<name>``: every real backend's forward at tiny width (``pvtt.bench.gpu_check_backends``).

Each section runs on its own: a failure is recorded as ``{"ok": false, "error": ...}`` and the
others still run; the exit code is 1 when any section failed. The JSON and the table are rewritten
after every section (``"complete": false`` until the last), so a run stopped by its time limit keeps
what it measured; ``--only`` reruns chosen sections. ``--tiny`` runs the same code at tiny
width on whatever device there is (the test suite runs it on the CPU, where ``torch.compile`` uses
the ``aot_eager`` backend: dynamo and AOTAutograd capture the same graphs, but inductor's C++ code
generation alone takes about a minute on 2 cores; ``--compile-backend`` overrides).

Writes ``DIR/gpu_check.json`` (every figure, with ``units``) and ``DIR/table.md`` (the README table);
the last stdout line is ``name=value`` pairs (``teacher_step_s=... mfu=...``), as the other
benchmarks end. The GPU machine has torch but no network: the other packages travel as wheels
(``envs/gpu_wheels.sh``, ``make gpu-check-wheels``; README "GPU check" says how to run it there).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from pvtt.bench import gpu_check_backends as backends
from pvtt.bench import gpu_check_dit as dit

log = logging.getLogger("pvtt.bench.gpu_check")

UNITS = {
    "*_s": "seconds of wall time, after torch.cuda.synchronize (a training step ends with loss.item())",
    "step_s": "median of the timed steps after one warm-up step",
    "compile_s": "first compiled step minus the steady step: dynamo + AOTAutograd + inductor (+ autotuning)",
    "peak_mem_gib": "GiB, torch.cuda.max_memory_allocated since torch.cuda.reset_peak_memory_stats before the section "
                    "(null on the CPU)",
    "*_tflop*": "1e12 FLOP, counted analytically (pvtt/bench/gpu_check_dit.py dit_forward_flops)",
    "achieved_tflops": "model TFLOP per step / step_s",
    "mfu": "model FLOPs per step (3 forward-equivalents per trained call) / step_s / peak_bf16_tflops",
    "hfu": "hardware FLOPs (model FLOPs + the forward recomputed by gradient checkpointing) / step_s / peak",
    "params": "parameters (count)",
}


PACKAGES = ("transformers", "diffsynth", "deepspeed", "peft", "sam2", "open_clip_torch", "pyiqa", "lpips", "triton", "numpy")


def sections(shape: dit.Shape, device: torch.device, work: Path, compile_backend: str) -> dict[str, Callable[[], dict]]:
    """The checks in running order; the compiled step, whose compile time is the least predictable, runs last
    (the JSON is rewritten after every section, so a run stopped by its time limit keeps what it measured)."""
    out = {
        "teacher_eager": lambda: dit.teacher_step(shape, device, "eager"),
        "teacher_zero2": lambda: dit.teacher_step(shape, device, "zero2"),
        "dmd2_step": lambda: dit.dmd2_step(shape, device),
        "vae": lambda: dit.vae_roundtrip(shape, device, work),
        "inference": lambda: dit.inference(shape, device, work, compile_backend),
    }
    for name in backends.BACKENDS:
        out[f"backend_{name}"] = lambda name=name: backends.run_one(name, device, work / "backends")
    out["teacher_compile"] = lambda: dit.teacher_step(shape, device, "compile", compile_backend)
    return out


def run_section(name: str, fn: Callable[[], dict]) -> dict:
    """``fn()`` with its wall time and ``ok``; an exception becomes ``{"ok": false, "error": ...}``."""
    log.info("gpu_check: %s ...", name)
    t0 = time.perf_counter()
    try:
        out = {"ok": True, **fn()}
    except Exception as e:  # noqa: BLE001 - one failure must not lose the other sections
        out = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
    out["wall_s"] = round(time.perf_counter() - t0, 3)
    log.info("gpu_check: %s %s in %.1f s%s", name, "ok" if out["ok"] else "FAILED", out["wall_s"],
             "" if out["ok"] else f": {out['error']}")
    return out


def device_info(device: torch.device) -> dict:
    peak, source = dit.peak_tflops(device)
    info = {"device": str(device), "name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
            or platform.machine(), "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "cpu_threads": torch.get_num_threads(), "peak_bf16_tflops": peak, "peak_source": source}
    info["packages"] = {}
    for name in PACKAGES:
        try:
            info["packages"][name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            info["packages"][name] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(memory_gib=round(props.total_memory / dit.GIB, 1), multiprocessors=props.multi_processor_count,
                    sdpa_flash=torch.backends.cuda.flash_sdp_enabled())
    return info


def _fmt(v, unit: str = "") -> str:
    return "–" if v is None else f"{v:g}{unit}" if isinstance(v, (int, float)) else str(v)


def table(doc: dict) -> str:
    """The README table: one row per section."""
    d, s = doc["device"], doc["sections"]
    rows = ["| check | result | time | peak memory | MFU | notes |", "|---|---|---|---|---|---|"]
    for name, r in s.items():
        if not r["ok"]:
            rows.append(f"| {name} | **failed** | {_fmt(r['wall_s'], ' s')} | – | – | {r['error'][:120]} |")
            continue
        if name.startswith("teacher"):
            time_s = f"{_fmt(r['step_s'], ' s')}/step (first {_fmt(r['first_step_s'], ' s')})"
            notes = f"{r['model_tflop_per_step']} TFLOP/step, {r['achieved_tflops']} TFLOP/s"
            notes += f", compile {r['compile_s']} s ({r['compile_backend']})" if "compile_s" in r else ""
            notes += f", ZeRO stage {r['zero_stage']}" if "zero_stage" in r else ""
        elif name == "dmd2_step":
            time_s = f"{_fmt(r['step_s'], ' s')}"
            notes = f"{r['critic_steps']} critic + 1 generator update, {r['model_tflop_per_step']} TFLOP"
        elif name == "inference":
            time_s = f"teacher {_fmt(r['teacher_total_s'], ' s')}, student {_fmt(r['student_total_s'], ' s')}"
            fp8 = f"{r['student_fp8_s']} s" if r["student_fp8_s"] is not None else f"not run ({r['student_fp8_error']})"
            notes = (f"{r['teacher_steps']} steps CFG {r['teacher_cfg']:g} vs {r['student_steps']} steps, VAE decode "
                     f"{r['vae_decode_s']} s in both; student eager {r['student_eager_s']} s, compiled "
                     f"{r['student_compiled_s']} s, FP8 GEMMs {fp8}, {r['attention_fastest']} "
                     f"{r['student_fastest_attention_s']} s; speedup {r['speedup_end_to_end']}x")
        elif name == "vae":
            time_s = f"encode {_fmt(r['encode_s'], ' s')}, decode {_fmt(r['decode_s'], ' s')}"
            notes = f"{r['clip'][0]}x{r['clip'][1]}x{r['clip'][2]} -> {'x'.join(map(str, r['latent']))}, {r['dtype']}"
        else:
            time_s = _fmt(r["seconds"], " s")
            notes = f"{r.get('dtype', '')}: {r.get('how', '')}"
        mem = _fmt(r.get("peak_mem_gib"), " GiB")
        rows.append(f"| {name} | ok | {time_s} | {mem} | {_fmt(r.get('mfu'))} | {notes} |")
    for name, why in doc["omitted"].items():
        rows.append(f"| backend_{name} | omitted | – | – | – | {why} |")
    head = (f"`make gpu-check` on {d['name']} ({d['device']}, torch {d['torch']}, CUDA {d['cuda']}), shape "
            f"{doc['shape']['name']}: {doc['shape']['frames']}x{doc['shape']['height']}x{doc['shape']['width']} frames -> "
            f"latents {'x'.join(map(str, doc['shape']['latent']))}, {doc['shape']['tokens']} tokens; MFU against "
            f"{_fmt(d['peak_bf16_tflops'])} TFLOP/s ({d['peak_source']}).")
    return head + "\n\n" + "\n".join(rows) + "\n"


def summary(doc: dict) -> str:
    """The last stdout line: ``name=value`` pairs (``na`` where a section failed or has no value)."""
    s = doc["sections"]

    def get(section: str, key: str):
        r = s.get(section, {})
        return r.get(key) if r.get("ok") else None

    pairs = [("teacher_step_s", get("teacher_eager", "step_s")), ("mfu", get("teacher_eager", "mfu")),
             ("peak_gib", get("teacher_eager", "peak_mem_gib")), ("compile_s", get("teacher_compile", "compile_s")),
             ("compiled_step_s", get("teacher_compile", "step_s")), ("zero2_step_s", get("teacher_zero2", "step_s")),
             ("dmd2_step_s", get("dmd2_step", "step_s")), ("vae_encode_s", get("vae", "encode_s")),
             ("vae_decode_s", get("vae", "decode_s")), ("infer_speedup", get("inference", "speedup_end_to_end")),
             ("failed", sum(not r["ok"] for r in s.values()))]
    return " ".join(f"{k}={'na' if v is None else v}" for k, v in pairs)


def run(tiny: bool, out_dir: Path, device: torch.device, compile_backend: str | None = None,
        only: list[str] | None = None) -> dict:
    shape = dit.tiny_shape() if tiny else dit.full_shape()
    backend = compile_backend or ("inductor" if device.type == "cuda" else "aot_eager")
    t0 = time.perf_counter()
    doc = {"schema": 1, "mode": "tiny" if tiny else "full", "ok": True, "complete": False, "device": device_info(device),
           "shape": dit.shape_info(shape), "compile_backend": backend, "sections": {},
           "omitted": backends.omitted(device), "units": UNITS, "total_s": 0.0}
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pvtt-gpu-check-") as tmp:
        for name, fn in sections(shape, device, Path(tmp), backend).items():
            if only and name not in only:
                continue
            doc["sections"][name] = run_section(name, fn)
            doc["ok"] = all(r["ok"] for r in doc["sections"].values())
            doc["total_s"] = round(time.perf_counter() - t0, 1)
            write(doc, out_dir)
    doc["complete"] = True
    write(doc, out_dir)
    return doc


def write(doc: dict, out_dir: Path) -> None:
    """gpu_check.json and table.md as they stand (rewritten after every section)."""
    (out_dir / "gpu_check.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out_dir / "table.md").write_text(table(doc))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="the same code at tiny width (CPU, seconds)")
    ap.add_argument("--out", type=Path, default=Path("work/gpu_check"), help="where gpu_check.json and table.md go")
    ap.add_argument("--device", default=None, help="default: cuda when there is one, else cpu")
    ap.add_argument("--compile-backend", default=None, help="torch.compile backend (default: inductor on CUDA, aot_eager on CPU)")
    ap.add_argument("--only", nargs="*", default=None, help="run only these sections (debugging)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    doc = run(a.tiny, a.out, device, a.compile_backend, a.only)
    print(table(doc))
    print(summary(doc))
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
