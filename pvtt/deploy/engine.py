"""Engine stage: student_4 as every deployable form, each checked against PyTorch and timed.

Forms (``engine.onnx``, ``engine.quantized`` and ``engine.tensorrt`` list which):
- ONNX (``pvtt.deploy.onnx_engine``): ``onnx`` (fp32), ``onnx_fp16``, ``onnx_int8`` (onnxruntime's
  dynamic quantisation), ``onnx_int8_qdq`` (static INT8 calibrated on the denoiser's inputs while
  sampling ``engine.calibration_items`` benchmark items), run with onnxruntime on the CPU;
- quantised PyTorch students (``pvtt.deploy.quantized``): ``int8_weight``, ``int8_dynamic``,
  ``fp8`` (where an FP8 GEMM runs);
- TensorRT plans (``pvtt.deploy.tensorrt_engine``): ``tensorrt_fp16`` from the fp16 ONNX model and
  ``tensorrt_int8`` from the calibrated QDQ one (strongly typed), where tensorrt and a CUDA GPU exist.

Each form samples one benchmark item with the student's own step count from the same noise as
the fp32 PyTorch student; the largest absolute difference of one denoiser call and of the final
latents must stay within ``engine.tolerance.<form>``, and a form that does not fails the stage
naming it. ``check.json`` says for every form what was built (or why not), both errors, its
tolerance and its sampling seconds next to PyTorch's. Quality on the whole benchmark is the eval
stage's (``student_4_<form>`` rows).
"""
from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import torch

from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import write_json
from genbuild.manifest import write_manifest
from genbuild.stage import parser, setup_logging
from genbuild.train.flow import sample
from pvtt.deploy import quantized as Q
from pvtt.deploy import tensorrt_engine as TRT
from pvtt.deploy.onnx_engine import OnnxDenoiser, calibration_feeds, export_onnx, input_names, to_fp16, to_int8, to_int8_qdq
from pvtt.models.bundle import load_bundle
from pvtt.models.dit import read_config
from pvtt.train.data import encode
from pvtt.train.loader import load_all

log = logging.getLogger(__name__)

ONNX_FORMS = ("onnx", "onnx_fp16", "onnx_int8", "onnx_int8_qdq")
__all__ = ["OnnxDenoiser", "build_engine", "export_onnx"]


def onnx_file(form: str) -> str:
    return "student_4.onnx" if form == "onnx" else f"student_4_{form.removeprefix('onnx_')}.onnx"


def tensorrt_plan(precision: str) -> str:
    return f"student_4_{precision}.plan"


def check_params(ep: dict) -> None:
    """The engine's cross-key rules, at start-up: each names the key to change."""
    for form in ep.get("onnx", []):
        if form not in ONNX_FORMS:
            raise ValueError(f"engine.onnx: unknown form '{form}' (known: {', '.join(ONNX_FORMS)})")
    trt = ep["tensorrt"]
    for precision in trt["precisions"] if trt["build"] != "off" else []:
        if TRT.PRECISIONS[precision] not in ep.get("onnx", []):
            raise ValueError(f"engine.tensorrt.precisions: {precision} builds from the {TRT.PRECISIONS[precision]} model; "
                             f"add {TRT.PRECISIONS[precision]} to engine.onnx (or drop {precision}, or set "
                             "engine.tensorrt.build: off)")
    reason = TRT.unavailable() if trt["build"] == "require" else None
    if reason:
        raise RuntimeError(f"engine.tensorrt.build is 'require' but {reason}")


def _compare(model, dit, example: tuple, cond, noise, steps: int, shift: float, reference: torch.Tensor) -> dict:
    """One form against the fp32 student: the errors of one call and of the sampled latents, and seconds."""
    with torch.no_grad():
        single = (model(*example) - dit(*example)).abs().max().item()
    t0 = time.perf_counter()
    lat = sample(model, cond, noise, steps, shift)
    seconds = time.perf_counter() - t0
    return {"max_abs_diff_single_call": single, "max_abs_diff_sampled_latents": (lat - reference).abs().max().item(),
            "seconds": round(seconds, 4)}


def _onnx_forms(tmp: Path, dit, example: tuple, ep: dict, threads: int, calibrate) -> dict[str, dict]:
    """Export the fp32 model and convert it to every ONNX form asked for."""
    wanted = list(ep.get("onnx", []))
    if not wanted:
        return {}
    export_onnx(dit, example, tmp / "student_4.onnx", int(ep["opset"]))
    convert = {"onnx_fp16": to_fp16, "onnx_int8": to_int8,
               "onnx_int8_qdq": lambda src, dst: to_int8_qdq(src, dst, calibrate())}
    forms = {}
    for form in wanted:
        if form in convert:
            convert[form](tmp / "student_4.onnx", tmp / onnx_file(form))
        forms[form] = {"built": True, "file": onnx_file(form), "model": OnnxDenoiser(tmp / onnx_file(form), threads)}
    return forms


def _quantized_forms(tmp: Path, student_dir: Path, dit, ep: dict) -> dict[str, dict]:
    forms = {}
    for form in ep.get("quantized", []):
        reason = Q.unavailable(form)
        if reason:
            forms[form] = {"built": False, "reason": reason}
            continue
        Q.save(Q.quantized(dit, form), form, student_dir, tmp / f"student_4_{form}")
        forms[form] = {"built": True, "file": f"student_4_{form}/", "model": Q.load(tmp / f"student_4_{form}")}
    return forms


def _tensorrt_forms(tmp: Path, te: dict) -> dict[str, dict]:
    """A plan per precision from its ONNX model, or why none was built."""
    reason = "engine.tensorrt.build is 'off'" if te["build"] == "off" else TRT.unavailable()
    forms = {}
    for precision in te["precisions"]:
        form = f"tensorrt_{precision}"
        if reason:
            forms[form] = {"built": False, "reason": reason}
            continue
        info = TRT.build_plan(tmp / onnx_file(TRT.PRECISIONS[precision]), tmp / tensorrt_plan(precision), precision,
                              float(te.get("workspace_gb", 4.0)))
        forms[form] = {"built": True, "file": tensorrt_plan(precision), **info,
                       "model": TRT.TensorRTDenoiser(tmp / tensorrt_plan(precision))}
    return forms


def _build_forms(tmp: Path, student_dir: Path, dit, example: tuple, ep: dict, threads: int, calibrate) -> dict[str, dict]:
    """Build every form asked for: name -> {"built", "file" | "reason", "model" (callable, popped later)}."""
    forms = _onnx_forms(tmp, dit, example, ep, threads, calibrate)
    forms.update(_quantized_forms(tmp, student_dir, dit, ep))
    forms.update(_tensorrt_forms(tmp, ep["tensorrt"]))
    if "onnx" not in forms and (tmp / "student_4.onnx").exists():
        (tmp / "student_4.onnx").unlink()  # only the converted forms were asked for
    return forms


def _check_forms(forms: dict[str, dict], dit, example: tuple, cond, noise, steps: int, shift: float,
                 reference: torch.Tensor, tolerances: dict, pytorch_s: float) -> list[str]:
    """Compare every built form with PyTorch (filling its entry); the failures, each naming its key."""
    failures = []
    for form, info in forms.items():
        if not info["built"]:
            log.info("engine %s: not built: %s", form, info["reason"])
            continue
        if form not in tolerances:
            raise ValueError(f"engine.tolerance.{form}: no tolerance for a form that is built")
        info.update(_compare(info.pop("model"), dit, example, cond, noise, steps, shift, reference),
                    tolerance=float(tolerances[form]))
        err = max(info["max_abs_diff_single_call"], info["max_abs_diff_sampled_latents"])
        info["passed"] = bool(err <= info["tolerance"])
        log.info("engine %s: max |diff| vs PyTorch single call %.2e, %d-step sample %.2e (tolerance %.0e): %s; "
                 "sampling %.3fs vs PyTorch %.3fs", form, info["max_abs_diff_single_call"], steps,
                 info["max_abs_diff_sampled_latents"], info["tolerance"], "pass" if info["passed"] else "FAIL",
                 info["seconds"], pytorch_s)
        if not info["passed"]:
            failures.append(f"{form}: {err:.2e} > engine.tolerance.{form} {info['tolerance']}")
    return failures


def build_engine(student_dir: Path, dataset_dir: Path, out_dir: Path, params: dict, threads: int = 1) -> dict:
    ep, td = params["engine"], params["train_data"]
    check_params(ep)
    cfg = read_config(student_dir)
    bundle = load_bundle(student_dir)
    steps, shift = int(cfg["steps"]), float(cfg["shift"])
    data = encode(load_all(dataset_dir, "benchmark", td, limit=int(ep.get("calibration_items", 1))), bundle)
    cond = data.cond.select(slice(0, 1))
    noise = torch.randn(data.target[:1].shape, generator=torch.Generator().manual_seed(0))
    example = (noise, torch.tensor([500.0]), cond.source, cond.mask, cond.image_tokens, cond.text_tokens)
    if bundle.dit.average_velocity:
        example += (torch.tensor([250.0]),)
    dit = bundle.dit.eval()
    calibrate = functools.cache(lambda: _calibration(dit, data, steps, shift))
    t0 = time.perf_counter()
    reference = sample(dit, cond, noise, steps, shift)
    pytorch_s = time.perf_counter() - t0
    with atomic_path(out_dir, directory=True) as tmp:
        forms = _build_forms(tmp, student_dir, dit, example, ep, threads, calibrate)
        failures = _check_forms(forms, dit, example, cond, noise, steps, shift, reference, dict(ep["tolerance"]), pytorch_s)
        if failures:
            raise RuntimeError("engine: outputs differ from PyTorch beyond tolerance: " + "; ".join(failures))
        check = {"steps": steps, "opset": int(ep["opset"]), "pytorch_seconds": round(pytorch_s, 4), "passed": True,
                 "input_shapes": {n: list(x.shape) for n, x in zip(input_names(dit), example)},
                 "built": [name for name, info in forms.items() if info["built"]], "engines": forms}
        if calibrate.cache_info().currsize:
            check["calibration"] = {"items": len(data.target), "denoiser_calls": len(calibrate())}
        write_json(tmp / "check.json", check)
        write_manifest(tmp, "engine", params, [student_dir / "model.safetensors"], {"engines": len(check["built"])},
                       extra={"check": {k: check[k] for k in ("passed", "built")}})
    return check


def _calibration(dit, data, steps: int, shift: float) -> list[dict]:
    """The denoiser's inputs while sampling every loaded benchmark item, each from its own noise."""
    n = len(data.target)
    conds = [data.cond.select(slice(i, i + 1)) for i in range(n)]
    noises = [torch.randn(data.target[:1].shape, generator=torch.Generator().manual_seed(1000 + i)) for i in range(n)]
    feeds = calibration_feeds(dit, conds, noises, steps, shift)
    log.info("engine: static INT8 calibration on %d denoiser calls (%d benchmark items x %d steps)", len(feeds), n, steps)
    return feeds


def main(argv=None) -> None:
    setup_logging()
    ap = parser("Export student_4 to ONNX (fp32/fp16/INT8) and quantised PyTorch forms, build TensorRT plans where "
                "possible, and check each against PyTorch.")
    ap.add_argument("--student", required=True, type=Path)
    ap.add_argument("--dataset", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, a.threads))
    build_engine(a.student, a.dataset, a.out, a.params, a.threads)
