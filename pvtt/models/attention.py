"""The DiT's attention kernel, chosen by name (``deploy.attention``), and ``torch.compile``.

DiffSynth's Wan blocks call one module-level function for every attention (self, text and image
cross-attention), and pick FlashAttention 3/2 or SageAttention at import time when those
packages import. A deployment wants the choice explicit: the same params give the same kernel on
every machine, and a kernel that is missing is an error naming the key, not a silent fallback.
``attention_backend(name)`` swaps that function for the block's duration.

- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` (PyTorch picks its own fused
  kernel: flash / memory-efficient / math), the default;
- ``math``: softmax(QK^T / sqrt(d)) V written out in fp32, the reference the others are
  checked against;
- ``flash_attn``: FlashAttention 3 (``flash_attn_interface``) or 2 (``flash_attn``), CUDA, fp16/bf16;
- ``sageattention``: SageAttention's INT8 QK kernel (``sageattention.sageattn``), CUDA.
"""
from __future__ import annotations

import contextlib
import importlib

import diffsynth.models.wan_video_dit as wan_dit
import torch
import torch.nn.functional as F

BACKENDS = ("sdpa", "math", "flash_attn", "sageattention")


def _heads_first(x: torch.Tensor, n: int) -> torch.Tensor:
    b, s, _ = x.shape
    return x.view(b, s, n, -1).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, n, s, d = x.shape
    return x.transpose(1, 2).reshape(b, s, n * d)


def _sdpa(q, k, v, num_heads, compatibility_mode=False):
    return _merge(F.scaled_dot_product_attention(*(_heads_first(t, num_heads) for t in (q, k, v))))


def _math(q, k, v, num_heads, compatibility_mode=False):
    qh, kh, vh = (_heads_first(t, num_heads).float() for t in (q, k, v))
    w = torch.softmax(qh @ kh.transpose(-1, -2) / qh.shape[-1] ** 0.5, dim=-1)
    return _merge(w @ vh).to(q.dtype)


def _import_first(*modules: str):
    errors = []
    for name in modules:
        try:
            return importlib.import_module(name)
        except Exception as e:  # a wheel built for another CUDA fails with OSError/ImportError alike
            errors.append(f"{name}: {e.__class__.__name__}: {str(e)[:100]}")
    raise ImportError("; ".join(errors))


def _cuda_kernel(name: str, modules: tuple[str, ...], call):
    """A kernel from ``modules`` (the first that imports) run as ``call(module, q, k, v)`` on
    (b, s, n, d) or (b, n, s, d) tensors; an error naming ``deploy.attention`` where it cannot run."""
    try:
        mod = _import_first(*modules)
    except ImportError as e:
        raise ValueError(f"deploy.attention: '{name}' is not importable here ({e}); use 'sdpa'") from None
    if not torch.cuda.is_available():
        raise ValueError(f"deploy.attention: '{name}' needs a CUDA GPU and this machine has none; use 'sdpa'")

    def attend(q, k, v, num_heads, compatibility_mode=False):
        return call(mod, q, k, v, num_heads)
    return attend


def _flash(mod, q, k, v, n):
    b, s, _ = q.shape
    out = mod.flash_attn_func(*(t.view(t.shape[0], t.shape[1], n, -1) for t in (q, k, v)))
    out = out[0] if isinstance(out, tuple) else out
    return out.reshape(b, s, -1)


def _sage(mod, q, k, v, n):
    return _merge(mod.sageattn(*(_heads_first(t, n) for t in (q, k, v))))


def attention_function(name: str):
    """The attention function for ``name``; ValueError naming ``deploy.attention`` otherwise."""
    if name == "sdpa":
        return _sdpa
    if name == "math":
        return _math
    if name == "flash_attn":
        return _cuda_kernel(name, ("flash_attn_interface", "flash_attn"), _flash)
    if name == "sageattention":
        return _cuda_kernel(name, ("sageattention",), _sage)
    raise ValueError(f"deploy.attention: unknown '{name}' (known: {', '.join(BACKENDS)})")


@contextlib.contextmanager
def attention_backend(name: str):
    """Within this block every Wan DiT attention runs ``name``'s kernel."""
    fn, before = attention_function(name), wan_dit.flash_attention
    wan_dit.flash_attention = fn
    try:
        yield fn
    finally:
        wan_dit.flash_attention = before


def compiled(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """``torch.compile`` (inductor) of the model when ``deploy.compile`` is on; the model otherwise.
    The first calls compile (seconds to minutes); later calls with the same shapes reuse it."""
    # the wrapper reads unknown attributes off the model (``average_velocity``, ``prediction``)
    return torch.compile(model, dynamic=False) if enabled else model
