"""student_4's denoiser as ONNX: export, the fp16 and INT8 conversions, and the onnxruntime denoiser.

ONNX has no complex type, so the export runs the DiT with its real-valued RoPE (equal to
DiffSynth's complex RoPE to ~1e-6). The fp16 model keeps fp32 inputs and outputs (the casts are
inside), so every engine is called the same way. There are two INT8 models: onnxruntime's dynamic
quantisation (int8 weights per channel, activations quantised per call), which needs no
calibration set, and a static one whose activation ranges are calibrated on the denoiser's inputs
while sampling benchmark latents (``calibration_feeds``), written with QuantizeLinear /
DequantizeLinear pairs (QDQ, symmetric): onnxruntime runs it here, and it is the explicitly
quantised network TensorRT builds its INT8 plan from (``pvtt.deploy.tensorrt_engine``).
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from pvtt.models.dit import real_rope

INPUT_NAMES = ["x_t", "timestep", "source", "mask", "image_tokens", "text_tokens"]


def input_names(dit) -> list[str]:
    """The engine's inputs: the DiT's, and the step's length for an average-velocity (MeanFlow) student."""
    return INPUT_NAMES + (["interval"] if getattr(dit, "average_velocity", False) else [])


def export_onnx(dit, example: tuple, path: Path, opset: int) -> None:
    dit = dit.eval()
    dit.use_real_rope = True
    try:
        with real_rope(), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dit(*example)  # fills the RoPE cache outside the trace
            torch.onnx.export(dit, example, str(path), input_names=input_names(dit)[:len(example)],
                              output_names=["velocity"], opset_version=opset, dynamo=False)
    finally:
        dit.use_real_rope = False


def to_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and arithmetic, fp32 inputs and outputs (``keep_io_types``)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))


@contextlib.contextmanager
def _quiet_quantiser():
    """onnxruntime's quantisers log every tensor they skip through the root logger: INFO off meanwhile."""
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def to_int8(src: Path, dst: Path) -> None:
    """onnxruntime's dynamic INT8 quantisation of the MatMul/Gemm weights, per channel."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_quantiser():
        quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"])


def calibration_feeds(dit, conds: list, noises: list[torch.Tensor], steps: int, shift: float) -> list[dict]:
    """The denoiser's inputs (name -> fp32 array) at every call made while sampling each benchmark
    item with the student's own steps: the activations the engine will meet, which is what a
    static INT8 calibration must see."""
    from genbuild.train.flow import sample

    recorder = _Recorder(dit)
    with torch.no_grad():
        for cond, noise in zip(conds, noises):
            sample(recorder, cond, noise, steps, shift)
    names = input_names(dit)
    return [{n: t.numpy().astype(np.float32) for n, t in zip(names, call)} for call in recorder.calls]


class _Recorder:
    """The DiT, keeping a copy of every call's inputs."""

    def __init__(self, dit):
        self.dit, self.calls, self.average_velocity = dit, [], getattr(dit, "average_velocity", False)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        self.calls.append([t.detach().cpu().clone() for t in inputs])
        return self.dit(*inputs)


def to_int8_qdq(src: Path, dst: Path, feeds: list[dict]) -> None:
    """Static INT8 with QDQ nodes: weights per channel, activation ranges from ``feeds`` (min/max),
    both symmetric as TensorRT's explicit quantisation requires."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Feeds(CalibrationDataReader):
        def __init__(self):
            self.rest = iter(feeds)

        def get_next(self):
            return next(self.rest, None)

    if not feeds:
        raise ValueError("to_int8_qdq: no calibration inputs")
    with _quiet_quantiser(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(src), str(dst), Feeds(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["MatMul", "Gemm"],
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})


class OnnxDenoiser:
    """Callable with the DiT's signature, backed by an onnxruntime session; an engine exported from
    a MeanFlow student takes the interval too (``average_velocity``)."""

    def __init__(self, path: Path, threads: int = 1):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, threads)
        so.inter_op_num_threads = 1
        so.log_severity_level = 3  # the fp16 model's Cast nodes warn on every load
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]
        self.average_velocity = "interval" in self.names

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        feeds = {n: t.detach().cpu().numpy().astype(np.float32) for n, t in zip(self.names, inputs)}
        return torch.from_numpy(self.session.run(None, feeds)[0])
