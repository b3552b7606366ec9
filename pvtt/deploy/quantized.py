"""student_4 in INT8 and FP8 as PyTorch models: build from the fp32 student, save, load.

Three forms (``engine.quantized``), each saved as its own directory of the engine artifact with
the student's ``config.json`` plus ``"quantization"``:
- ``int8_weight``: weight-only INT8 (``genbuild.quant``, torchao's int8_weight_only layout):
  ``model.safetensors``; memory and disk four-fold smaller, matmuls dequantised;
- ``int8_dynamic``: PyTorch's dynamic INT8 (int8 weights and per-call int8 activations, the CPU's
  quantised GEMM): ``model.pt`` (packed weights; ``torch.load(weights_only=True)`` reads it);
- ``fp8``: float8 e4m3 weights and per-call e4m3 activations multiplied by an FP8 GEMM
  (``genbuild.quant.Fp8Linear``): built where that GEMM runs, i.e. a CUDA GPU of compute
  capability 8.9 or newer (Ada, Hopper: FP8 tensor cores) or a CPU whose PyTorch has
  ``torch._scaled_mm`` (2.14 does; same arithmetic, no speed-up); elsewhere the reason is recorded.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from genbuild.quant import dynamic_int8, fp8_unavailable, load_quantized, quantize
from pvtt.models.dit import PVTTDiT

FORMS = ("int8_weight", "int8_dynamic", "fp8")


def unavailable(form: str) -> str | None:
    """Why ``form`` cannot be built on this machine (None: it can)."""
    if form not in FORMS:
        raise ValueError(f"engine.quantized: unknown form '{form}' (known: {', '.join(FORMS)})")
    if form == "int8_dynamic" and not torch.backends.quantized.supported_engines:
        return "this PyTorch build has no quantised CPU engine (fbgemm / onednn / qnnpack)"
    if form == "fp8":
        return fp8_unavailable("cpu")  # the engine stage builds and checks on the CPU
    return None


def quantized(dit: PVTTDiT, form: str) -> torch.nn.Module:
    """A quantised copy of the fp32 student (the student itself is left as it is)."""
    model = copy.deepcopy(dit).eval()
    if form == "int8_dynamic":
        return dynamic_int8(model)
    quantize(model, "int8" if form == "int8_weight" else "fp8")
    return model


def save(model: torch.nn.Module, form: str, student_dir: Path, out: Path) -> None:
    out.mkdir(parents=True)
    cfg = json.loads((Path(student_dir) / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "quantization": form}, sort_keys=True, indent=2) + "\n")
    state = model.state_dict()
    if form == "int8_dynamic":  # the state dict itself: its _metadata holds the packed modules' versions
        torch.save(state, out / "model.pt")
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})


def load(model_dir: Path) -> torch.nn.Module:
    """A quantised student from its directory (``save``)."""
    model_dir = Path(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    form = cfg.get("quantization")
    base = PVTTDiT(cfg["arch"], cfg["latent_channels"], cfg.get("mask_channels", 1), cfg.get("prediction", "velocity"),
                   cfg.get("average_velocity", False)).eval()
    if form == "int8_dynamic":
        model = dynamic_int8(base)
        model.load_state_dict(torch.load(model_dir / "model.pt", weights_only=True))
        return model.eval()
    if form in ("int8_weight", "fp8"):
        return load_quantized(base, load_file(str(model_dir / "model.safetensors")), "int8" if form == "int8_weight" else "fp8").eval()
    raise ValueError(f"{model_dir}: not a quantised student (config.json quantization: {form!r})")
