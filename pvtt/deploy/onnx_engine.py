"""student_4's denoiser as ONNX: export, the fp16 and INT8 conversions, and the onnxruntime denoiser.

ONNX has no complex type, so the export runs the DiT with its real-valued RoPE (equal to
DiffSynth's complex RoPE to ~1e-6). The fp16 model keeps fp32 inputs and outputs (the casts are
inside), so every engine is called the same way; the INT8 one is onnxruntime's dynamic
quantisation (int8 weights per channel, activations quantised per call), which needs no
calibration set.
"""
from __future__ import annotations

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


def to_int8(src: Path, dst: Path) -> None:
    """onnxruntime's dynamic INT8 quantisation of the MatMul/Gemm weights, per channel."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.INFO)  # the quantiser logs every tensor it skips, through the root logger
    try:
        quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        logging.disable(logging.NOTSET)


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
