"""student_4 as TensorRT plans: build from the ONNX models, run on the GPU with torch's CUDA memory.

Two precisions (``engine.tensorrt.precisions``):
- ``fp16``: the fp32 ONNX model built with TensorRT's FP16 flag (its tactics choose fp16 or fp32
  per layer);
- ``int8``: the calibrated QDQ model (``onnx_engine.to_int8_qdq``: activation ranges measured on
  the denoiser's inputs while sampling benchmark latents). TensorRT reads the Q/DQ scales as
  explicit quantisation, which is how TensorRT 10 builds INT8 (its implicit calibrator API is
  deprecated), so the plan and the onnxruntime model share one calibration.

A plan is specific to its GPU and TensorRT version: it is built and checked on the machine that
runs it. Where ``tensorrt`` does not import or no CUDA GPU exists, ``unavailable`` says so and the
engine stage records the reason (``engine.tensorrt.build: require`` turns that into an error).
"""
from __future__ import annotations

from pathlib import Path

import torch

from pvtt.deploy.onnx_engine import INPUT_NAMES

PRECISIONS = {"fp16": "student_4.onnx", "int8": "student_4_int8_qdq.onnx"}  # precision -> the ONNX model it builds from


def unavailable() -> str | None:
    """Why no TensorRT plan can be built or run here (None: it can)."""
    try:
        import tensorrt  # noqa: F401
    except Exception as e:  # the PyPI stub fails at import on machines without NVIDIA's wheels
        return f"tensorrt not importable ({e.__class__.__name__}: {str(e)[:120]})"
    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine"
    return None


def build_plan(onnx_path: Path, plan_path: Path, precision: str, workspace_gb: float = 4.0) -> dict:
    """Parse ``onnx_path`` and write a serialised plan; what was built, for check.json."""
    import tensorrt as trt

    if precision not in PRECISIONS:
        raise ValueError(f"engine.tensorrt.precisions: unknown '{precision}' (known: {', '.join(PRECISIONS)})")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT could not parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # the Q/DQ nodes carry the calibrated scales
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"{onnx_path}: TensorRT {precision} build failed (see the log above)")
    Path(plan_path).write_bytes(bytes(plan))
    return {"precision": precision, "from": Path(onnx_path).name, "tensorrt_version": trt.__version__,
            "gpu": torch.cuda.get_device_name()}


class TensorRTDenoiser:
    """Callable with the DiT's signature (CPU or CUDA tensors in, a CPU tensor out), backed by a plan:
    inputs bound by name from torch CUDA tensors, run on torch's current stream."""

    def __init__(self, plan_path: Path):
        import tensorrt as trt

        self._trt = trt
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{plan_path}: not a TensorRT plan for this GPU and TensorRT version")
        self.context = self.engine.create_execution_context()
        io = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = {n for n in io if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
        self.average_velocity = "interval" in inputs
        self.inputs = [n for n in INPUT_NAMES + ["interval"] if n in inputs]
        self.output = next(n for n in io if n not in inputs)
        for name in io:
            if self.engine.get_tensor_dtype(name) != trt.float32:
                raise RuntimeError(f"{plan_path}: tensor '{name}' is {self.engine.get_tensor_dtype(name)}, expected fp32 I/O")

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        stream = torch.cuda.current_stream()
        feeds = [t.detach().to("cuda", torch.float32).contiguous() for t in inputs]
        for name, t in zip(self.inputs, feeds):
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        out = torch.empty(tuple(self.context.get_tensor_shape(self.output)), dtype=torch.float32, device="cuda")
        self.context.set_tensor_address(self.output, out.data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return out.cpu()
