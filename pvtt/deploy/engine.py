"""Engine stage: student_4 as every deployable form, each checked against PyTorch and timed.

Forms (``engine.onnx`` and ``engine.quantized`` list which):
- ONNX (``pvtt.deploy.onnx_engine``): ``onnx`` (fp32), ``onnx_fp16``, ``onnx_int8`` (onnxruntime's
  dynamic quantisation), run with onnxruntime on the CPU;
- quantised PyTorch students (``pvtt.deploy.quantized``): ``int8_weight``, ``int8_dynamic``,
  ``fp8`` (where the GPU has FP8);
- TensorRT (fp16 from the ONNX model) where the tensorrt package and a CUDA GPU exist.

Each form samples one benchmark item with the student's own step count from the same noise as
the fp32 PyTorch student; the largest absolute difference of one denoiser call and of the final
latents must stay within ``engine.tolerance.<form>``, and a form that does not fails the stage
naming it. ``check.json`` says for every form what was built (or why not), both errors, its
tolerance and its sampling seconds next to PyTorch's. Quality on the whole benchmark is the eval
stage's (``student_4_<form>`` rows).
"""
from __future__ import annotations

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
from pvtt.deploy.onnx_engine import OnnxDenoiser, export_onnx, input_names, to_fp16, to_int8
from pvtt.models.bundle import load_bundle
from pvtt.models.dit import read_config
from pvtt.train.data import encode
from pvtt.train.loader import load_all

log = logging.getLogger(__name__)

ONNX_FORMS = {"onnx": None, "onnx_fp16": to_fp16, "onnx_int8": to_int8}
__all__ = ["OnnxDenoiser", "build_engine", "export_onnx", "try_tensorrt"]


def try_tensorrt(onnx_path: Path, out_path: Path, mode: str) -> dict:
    """Build a TensorRT engine where possible; say exactly why not otherwise."""
    if mode == "off":
        return {"built": False, "reason": "engine.tensorrt is 'off'"}
    reason = None
    try:
        import tensorrt as trt
    except Exception as e:  # the PyPI stub fails at import on machines without NVIDIA's wheels
        reason = f"tensorrt not importable ({e.__class__.__name__}: {str(e)[:120]})"
    if reason is None and not torch.cuda.is_available():
        reason = "no CUDA GPU on this machine"
    if reason is not None:
        if mode == "require":
            raise RuntimeError(f"engine.tensorrt is 'require' but {reason}")
        return {"built": False, "reason": reason}
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser_ = trt.OnnxParser(network, logger)
    if not parser_.parse(onnx_path.read_bytes()):
        raise RuntimeError(f"{onnx_path}: TensorRT could not parse the ONNX model: {parser_.get_error(0)}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"{onnx_path}: TensorRT engine build failed")
    out_path.write_bytes(bytes(engine))
    return {"built": True, "reason": None, "precision": "fp16", "tensorrt_version": trt.__version__}


def onnx_file(form: str) -> str:
    return "student_4.onnx" if form == "onnx" else f"student_4_{form.removeprefix('onnx_')}.onnx"


def _compare(model, dit, example: tuple, cond, noise, steps: int, shift: float, reference: torch.Tensor) -> dict:
    """One form against the fp32 student: the errors of one call and of the sampled latents, and seconds."""
    with torch.no_grad():
        single = (model(*example) - dit(*example)).abs().max().item()
    t0 = time.perf_counter()
    lat = sample(model, cond, noise, steps, shift)
    seconds = time.perf_counter() - t0
    return {"max_abs_diff_single_call": single, "max_abs_diff_sampled_latents": (lat - reference).abs().max().item(),
            "seconds": round(seconds, 4)}


def _build_forms(tmp: Path, student_dir: Path, dit, example: tuple, ep: dict, threads: int) -> dict[str, dict]:
    """Build every form asked for: name -> {"built", "file" | "reason", "model" (callable, popped later)}."""
    forms: dict[str, dict] = {}
    onnx_forms = list(ep.get("onnx", ["onnx"]))
    if onnx_forms:
        export_onnx(dit, example, tmp / "student_4.onnx", int(ep["opset"]))
    for form in onnx_forms:
        if form not in ONNX_FORMS:
            raise ValueError(f"engine.onnx: unknown form '{form}' (known: {', '.join(ONNX_FORMS)})")
        if ONNX_FORMS[form] is not None:
            ONNX_FORMS[form](tmp / "student_4.onnx", tmp / onnx_file(form))
        forms[form] = {"built": True, "file": onnx_file(form), "model": OnnxDenoiser(tmp / onnx_file(form), threads)}
    if "onnx" not in onnx_forms and (tmp / "student_4.onnx").exists():
        (tmp / "student_4.onnx").unlink()  # only the converted forms were asked for
    for form in ep.get("quantized", []):
        reason = Q.unavailable(form)
        if reason:
            forms[form] = {"built": False, "reason": reason}
            continue
        Q.save(Q.quantized(dit, form), form, student_dir, tmp / f"student_4_{form}")
        forms[form] = {"built": True, "file": f"student_4_{form}/", "model": Q.load(tmp / f"student_4_{form}")}
    return forms


def build_engine(student_dir: Path, dataset_dir: Path, out_dir: Path, params: dict, threads: int = 1) -> dict:
    ep, td = params["engine"], params["train_data"]
    cfg = read_config(student_dir)
    bundle = load_bundle(student_dir)
    steps, shift, tolerances = int(cfg["steps"]), float(cfg["shift"]), dict(ep["tolerance"])
    data = encode(load_all(dataset_dir, "benchmark", td, limit=1), bundle)
    cond = data.cond.select(slice(0, 1))
    noise = torch.randn(data.target[:1].shape, generator=torch.Generator().manual_seed(0))
    example = (noise, torch.tensor([500.0]), cond.source, cond.mask, cond.image_tokens, cond.text_tokens)
    if bundle.dit.average_velocity:
        example += (torch.tensor([250.0]),)
    dit = bundle.dit.eval()
    t0 = time.perf_counter()
    reference = sample(dit, cond, noise, steps, shift)
    pytorch_s = time.perf_counter() - t0
    with atomic_path(out_dir, directory=True) as tmp:
        forms = _build_forms(tmp, student_dir, dit, example, ep, threads)
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
        forms["tensorrt"] = (try_tensorrt(tmp / "student_4.onnx", tmp / "student_4.plan", ep.get("tensorrt", "auto"))
                             if (tmp / "student_4.onnx").exists() else {"built": False, "reason": "no fp32 ONNX model"})
        if failures:
            raise RuntimeError("engine: outputs differ from PyTorch beyond tolerance: " + "; ".join(failures))
        check = {"steps": steps, "opset": int(ep["opset"]), "pytorch_seconds": round(pytorch_s, 4), "passed": True,
                 "input_shapes": {n: list(x.shape) for n, x in zip(input_names(dit), example)},
                 "built": [name for name, info in forms.items() if info["built"]], "engines": forms}
        write_json(tmp / "check.json", check)
        write_manifest(tmp, "engine", params, [student_dir / "model.safetensors"], {"engines": len(check["built"])},
                       extra={"check": {k: check[k] for k in ("passed", "built")}})
    return check


def main(argv=None) -> None:
    setup_logging()
    ap = parser("Export student_4 to ONNX (fp32/fp16/INT8) and quantised PyTorch forms, check each against PyTorch, "
                "build TensorRT where possible.")
    ap.add_argument("--student", required=True, type=Path)
    ap.add_argument("--dataset", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, a.threads))
    build_engine(a.student, a.dataset, a.out, a.params, a.threads)
