"""student_4's deployed forms as the engine stage recorded them: which were built, and each one's denoiser.

The engine artifact's ``check.json`` lists every form with ``built`` and its ``file`` (an ONNX model
run by onnxruntime, a directory of a quantised PyTorch student, or a TensorRT plan, which runs only
where tensorrt and a CUDA GPU are). The evaluation, the editor (``generate``, the service) and the
inference benchmark all read it through here.
"""
from __future__ import annotations

from pathlib import Path

from genbuild.io.jsonio import read_json


def engines(engine_dir: Path) -> dict[str, dict]:
    """form -> its check.json entry ({} when the engine artifact has no check.json)."""
    check_file = Path(engine_dir) / "check.json"
    return (read_json(check_file).get("engines") or {}) if check_file.is_file() else {}


def built(engine_dir: Path) -> list[str]:
    """The forms that were built and can run on this machine, in check.json's order."""
    from pvtt.deploy import tensorrt_engine

    runs_plans = tensorrt_engine.unavailable() is None
    return [form for form, info in engines(engine_dir).items()
            if info.get("built") and (runs_plans or not str(info.get("file", "")).endswith(".plan"))]


def load(engine_dir: Path, form: str, threads: int = 1):
    """The denoiser of one built form (callable with the DiT's signature)."""
    from pvtt.deploy import quantized
    from pvtt.deploy.onnx_engine import OnnxDenoiser

    if not (Path(engine_dir) / "check.json").is_file():
        raise FileNotFoundError(f"{Path(engine_dir) / 'check.json'}: no engine artifact "
                                "(build it: snakemake engine, or `dvc pull engine`)")
    info = engines(engine_dir).get(form)
    if not info or not info.get("built"):
        why = (info or {}).get("reason") or "not in engine.onnx / engine.quantized"
        raise ValueError(f"deploy.form: '{form}' was not built by the engine stage ({why})")
    path = Path(engine_dir) / info["file"]
    if path.suffix == ".plan":
        from pvtt.deploy import tensorrt_engine

        reason = tensorrt_engine.unavailable()
        if reason:
            raise ValueError(f"deploy.form: '{form}' is a TensorRT plan; {reason}")
        return tensorrt_engine.TensorRTDenoiser(path)
    return OnnxDenoiser(path, threads) if path.suffix == ".onnx" else quantized.load(path)
