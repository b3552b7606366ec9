"""Weight-only INT8 (and FP8): every ``nn.Linear`` of a model stored as int8 with one fp32 scale per output row.

Why weight-only, per channel, symmetric: it is the quantisation that needs no calibration data and
keeps a transformer's quality (the activations stay in their dtype; the weights' rounding error is
at most half a step of their own row's range), and it is what torchao calls ``int8_weight_only``.
Storage and weight memory drop four-fold from fp32; the matmul dequantises the weight to the
activation's dtype, so speed on CPU is the fp32 model's (an INT8 GEMM kernel is a backend
choice on GPU, not a format change). The format is a plain state dict (``<name>.qweight`` int8,
``<name>.scale`` fp32), saved as safetensors; ``quantize`` converts a model in place and
``load_quantized`` rebuilds one from its fp32 architecture.

The same layout holds FP8 (``Fp8Linear``: float8 e4m3 weights, one scale per row, max 448), but
its matmul is an FP8 GEMM: each call scales the activations per row into e4m3 too and multiplies
with ``torch._scaled_mm`` (torchao's ``float8_dynamic_activation_float8_weight``, rowwise), which
runs on FP8 tensor cores on Ada/Hopper GPUs and on the CPU through PyTorch's own kernel, so the
quality measured on a CPU is the GPU's arithmetic. ``fp8_unavailable`` says why a device has no
FP8 GEMM. ``dynamic_int8``
is the other INT8: weights and activations in int8 (the activation scale measured at each call),
with PyTorch's own quantised GEMM on the CPU (fbgemm/oneDNN), which is where INT8 buys speed
without a GPU.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

QMAX = 127


class Int8Linear(nn.Module):
    """A Linear whose weight is int8 ``qweight`` (out, in) times ``scale`` (out,)."""

    STORAGE, QMAX = torch.int8, QMAX

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=self.STORAGE))
        self.register_buffer("scale", torch.ones(out_features, dtype=torch.float32))
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None

    @classmethod
    def from_linear(cls, lin: nn.Linear) -> Int8Linear:
        q = cls(lin.in_features, lin.out_features, lin.bias is not None)
        w = lin.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp_min(1e-12) / cls.QMAX
        q.qweight.copy_(q.round(w / scale[:, None]).clamp(-cls.QMAX, cls.QMAX).to(cls.STORAGE))
        q.scale.copy_(scale)
        if lin.bias is not None:
            q.bias.data.copy_(lin.bias.detach().float())
        return q.to(lin.weight.device)

    @staticmethod
    def round(x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return (self.qweight.to(dtype) * self.scale.to(dtype)[:, None])

    @property
    def weight(self) -> torch.Tensor:
        """The dequantised weight, for code that reads ``.weight`` (its dtype, its shape) as of a Linear."""
        return self.dequantized()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.STORAGE} per-channel"


class Fp8Linear(Int8Linear):
    """float8 e4m3 weights (the cast rounds to the nearest e4m3 value) and an FP8 GEMM: activations
    scaled per row into e4m3 at each call, both scales applied by ``torch._scaled_mm``."""

    STORAGE, QMAX = torch.float8_e4m3fn, 448.0

    @staticmethod
    def round(x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.qweight.dtype != self.STORAGE:
            raise TypeError(f"Fp8Linear weights are {self.qweight.dtype}, not e4m3: Module.to(dtype) casts every "
                            "floating buffer; cast the model before genbuild.quant.quantize, not after")
        rows = x.reshape(-1, self.in_features).float()
        scale = rows.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / self.QMAX
        xq = (rows / scale).clamp(-self.QMAX, self.QMAX).to(self.STORAGE)
        # CUDA's rowwise-scaled kernel writes bf16; the CPU's writes fp32
        y = torch._scaled_mm(xq, self.qweight.t(), scale_a=scale, scale_b=self.scale[None, :].float(),
                             out_dtype=torch.bfloat16 if x.is_cuda else torch.float32).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.reshape(*x.shape[:-1], self.out_features)


def fp8_unavailable(device: torch.device | str = "cpu") -> str | None:
    """Why ``device`` cannot run ``Fp8Linear``'s GEMM (None: it can): a CUDA GPU needs compute
    capability 8.9 (Ada/Hopper); elsewhere one tiny ``torch._scaled_mm`` must run."""
    device = torch.device(device)
    if device.type == "cuda":
        cap = torch.cuda.get_device_capability(device)
        return None if cap >= (8, 9) else f"FP8 GEMM needs CUDA compute capability >= 8.9; this GPU has {cap}"
    try:
        probe = torch.ones(16, 16, device=device).to(torch.float8_e4m3fn)
        one = torch.ones((), device=device)
        torch._scaled_mm(probe, probe.t(), scale_a=one, scale_b=one, out_dtype=torch.float32)
    except (RuntimeError, NotImplementedError) as e:
        return f"torch {torch.__version__} has no FP8 GEMM (torch._scaled_mm) on {device.type}: {str(e)[:160]}"
    return None


FORMATS = {"int8": Int8Linear, "fp8": Fp8Linear}


def _linears(model: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    return [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
            if isinstance(child, nn.Linear)]


def quantize(model: nn.Module, fmt: str = "int8") -> list[str]:
    """Replace every nn.Linear by an Int8Linear (``fmt`` "fp8": Fp8Linear), in place; returns their
    qualified names."""
    cls = FORMATS[fmt]
    names = {id(m): n for n, m in model.named_modules()}
    done = []
    for parent, name, lin in _linears(model):
        setattr(parent, name, cls.from_linear(lin))
        done.append(f"{names[id(parent)]}.{name}".lstrip("."))
    return sorted(done)


def load_quantized(model: nn.Module, state: dict[str, torch.Tensor], fmt: str = "int8") -> nn.Module:
    """``model`` (the fp32 architecture) with its Linears quantised to ``fmt`` and ``state`` loaded strictly."""
    quantize(model, fmt)
    model.load_state_dict(state, strict=True)
    return model


def dynamic_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every nn.Linear dynamically quantised (int8 weights per row and int8
    activations per call) by PyTorch's own quantiser, which runs on the CPU's quantised engine.
    Its state dict (packed weights) saves and loads with torch.save / torch.load(weights_only=True)."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao's deprecation notices, one per call
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=False)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer: what the model holds in memory and on disk."""
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
