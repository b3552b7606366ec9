"""Engine stage: student_4's denoiser -> ONNX (checked with onnxruntime) -> TensorRT where possible.

ONNX has no complex type, so the export runs the DiT with its real-valued RoPE (equal to
DiffSynth's complex RoPE to ~1e-6). The check samples one benchmark item with the student's
own step count twice, once calling PyTorch and once calling onnxruntime for every denoiser
call, and compares both the single-call outputs and the final latents against a tolerance.
A TensorRT engine is built only where the tensorrt package and a CUDA GPU exist; the stage
records which it built and why.
"""
from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import write_json
from genbuild.manifest import write_manifest
from genbuild.stage import parser, setup_logging
from genbuild.train.flow import sample
from pvtt.models.bundle import load_bundle
from pvtt.models.dit import read_config, real_rope
from pvtt.train.data import encode
from pvtt.train.loader import load_all

log = logging.getLogger(__name__)

INPUT_NAMES = ["x_t", "timestep", "source", "mask", "image_tokens", "text_tokens"]


def export_onnx(dit, example: tuple, path: Path, opset: int) -> None:
    dit = dit.eval()
    dit.use_real_rope = True
    try:
        with real_rope(), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dit(*example)  # fills the RoPE cache outside the trace
            torch.onnx.export(dit, example, str(path), input_names=INPUT_NAMES, output_names=["velocity"],
                              opset_version=opset, dynamo=False)
    finally:
        dit.use_real_rope = False


class OnnxDenoiser:
    """Callable with the DiT's signature, backed by an onnxruntime session."""

    def __init__(self, path: Path, threads: int = 1):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, threads)
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        feeds = {n: t.detach().cpu().numpy().astype(np.float32) for n, t in zip(INPUT_NAMES, inputs)}
        return torch.from_numpy(self.session.run(None, feeds)[0])


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


def build_engine(student_dir: Path, dataset_dir: Path, out_dir: Path, params: dict, threads: int = 1) -> dict:
    ep, td = params["engine"], params["train_data"]
    cfg = read_config(student_dir)
    bundle = load_bundle(student_dir)
    steps, shift, tol = int(cfg["steps"]), float(cfg["shift"]), float(ep["tolerance"])
    data = encode(load_all(dataset_dir, "benchmark", td, limit=1), bundle)
    cond = data.cond.select(slice(0, 1))
    noise = torch.randn(data.target[:1].shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([500.0])
    example = (noise, t, cond.source, cond.mask, cond.image_tokens, cond.text_tokens)
    with atomic_path(out_dir, directory=True) as tmp:
        onnx_path = tmp / "student_4.onnx"
        export_onnx(bundle.dit, example, onnx_path, int(ep["opset"]))
        ort_model = OnnxDenoiser(onnx_path, threads)
        dit = bundle.dit.eval()
        with torch.no_grad():
            single = (ort_model(*example) - dit(*example)).abs().max().item()
        t0 = time.perf_counter()
        lat_pt = sample(dit, cond, noise, steps, shift)
        pt_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        lat_ort = sample(ort_model, cond, noise, steps, shift)
        ort_s = time.perf_counter() - t0
        final = (lat_pt - lat_ort).abs().max().item()
        passed = bool(single <= tol and final <= tol)
        trt_info = try_tensorrt(onnx_path, tmp / "student_4.plan", ep.get("tensorrt", "auto"))
        check = {
            "onnx": "student_4.onnx", "opset": int(ep["opset"]), "steps": steps, "tolerance": tol,
            "max_abs_diff_single_call": single, "max_abs_diff_sampled_latents": final, "passed": passed,
            "input_shapes": {n: list(x.shape) for n, x in zip(INPUT_NAMES, example)},
            "tensorrt": trt_info, "built": ["onnx"] + (["tensorrt"] if trt_info["built"] else []),
        }
        log.info("engine: ONNX vs PyTorch max |diff| single call %.2e, %d-step sample %.2e (tolerance %.0e): %s; "
                 "sampling %.3fs PyTorch vs %.3fs onnxruntime; TensorRT: %s", single, steps, final, tol,
                 "pass" if passed else "FAIL", pt_s, ort_s, trt_info["reason"] or "built")
        if not passed:
            raise RuntimeError(f"engine: ONNX output differs from PyTorch by {max(single, final):.2e} > engine.tolerance {tol}")
        write_json(tmp / "check.json", check)
        write_manifest(tmp, "engine", params, [student_dir / "model.safetensors"], {"engines": len(check["built"])},
                       extra={"check": {k: check[k] for k in ("passed", "tolerance", "built")}})
    return check


def main(argv=None) -> None:
    setup_logging()
    ap = parser("Export student_4's denoiser to ONNX, verify it with onnxruntime, build TensorRT where possible.")
    ap.add_argument("--student", required=True, type=Path)
    ap.add_argument("--dataset", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, a.threads))
    build_engine(a.student, a.dataset, a.out, a.params, a.threads)
