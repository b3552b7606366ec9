"""student_4 as TensorRT plans: build from the ONNX models, run on the GPU with torch's CUDA memory.

Both plans are strongly typed: the network's precision is the ONNX model's own, which is how
TensorRT 11 builds (it removed the FP16/INT8 builder flags and the implicit INT8 calibrator) and
what TensorRT 10 offers as ``STRONGLY_TYPED``. So each precision builds from the ONNX form that
already has it (``engine.tensorrt.precisions``):
- ``fp16``: ``onnx_fp16`` (fp16 weights and arithmetic, fp32 inputs and outputs);
- ``int8``: ``onnx_int8_qdq`` (``onnx_engine.to_int8_qdq``: activation ranges measured on the
  denoiser's inputs while sampling benchmark latents, symmetric Q/DQ pairs TensorRT fuses into INT8
  GEMMs: explicit quantisation), so the plan and the onnxruntime model share one calibration.

A plan is specific to its GPU and TensorRT version: it is built and checked on the machine that
runs it. Where ``tensorrt`` does not import or no CUDA GPU exists, ``unavailable`` says so and the
engine stage records the reason (``engine.tensorrt.build: require`` turns that into an error).
"""
from __future__ import annotations

from pathlib import Path

import torch

from pvtt.deploy.onnx_engine import INPUT_NAMES

PRECISIONS = {"fp16": "onnx_fp16", "int8": "onnx_int8_qdq"}  # precision -> the ONNX form it builds from


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
    network = builder.create_network(_strongly_typed(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT could not parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"{onnx_path}: TensorRT {precision} build failed (see the log above)")
    Path(plan_path).write_bytes(bytes(plan))
    return {"precision": precision, "from": Path(onnx_path).name, "tensorrt_version": trt.__version__,
            "gpu": torch.cuda.get_device_name()}


def _strongly_typed(trt) -> int:
    """The network flags: STRONGLY_TYPED on TensorRT 10 (explicit batch is its only mode); 0 on 11,
    where every network is strongly typed."""
    if int(trt.__version__.split(".")[0]) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


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
