from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from genbuild.quant import Fp8Linear, Int8Linear, dynamic_int8, fp8_unavailable, load_quantized, quantize, weight_bytes


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 32, bias=False))


def test_int8_weights_are_close_smaller_and_round_trip(tmp_path):
    ref, q = _net(), _net()
    names = quantize(q)
    assert names == ["0", "2"] and isinstance(q[0], Int8Linear) and q[0].qweight.dtype == torch.int8
    err = (q[0].dequantized() - ref[0].weight).abs().max(dim=1).values
    assert (err <= q[0].scale / 2 + 1e-7).all()  # at most half a step of each row's own scale
    x = torch.randn(16, 64)
    rel = ((q(x) - ref(x)).norm() / ref(x).norm()).item()
    assert rel < 0.02
    assert weight_bytes(ref) / weight_bytes(q) > 3
    save_file({k: v.contiguous() for k, v in q.state_dict().items()}, str(tmp_path / "m.safetensors"))
    back = load_quantized(_net(), load_file(str(tmp_path / "m.safetensors")))
    assert torch.equal(back(x), q(x))
    assert q[0].weight.shape == ref[0].weight.shape  # code reading .weight (dtype, shape) keeps working


def test_fp8_weights_are_e4m3_close_and_round_trip(tmp_path):
    ref, q = _net(), _net()
    quantize(q, "fp8")
    assert isinstance(q[0], Fp8Linear) and q[0].qweight.dtype == torch.float8_e4m3fn
    x = torch.randn(16, 64)
    rel = ((q(x) - ref(x)).norm() / ref(x).norm()).item()
    assert 1e-4 < rel < 0.08  # e4m3 weights and activations (3-bit mantissas) through two layers: ~5 %
    save_file({k: v.contiguous() for k, v in q.state_dict().items()}, str(tmp_path / "m.safetensors"))
    back = load_quantized(_net(), load_file(str(tmp_path / "m.safetensors")), "fp8")
    assert torch.equal(back(x), q(x))


def test_fp8_matmul_is_an_fp8_gemm_of_row_scaled_activations():
    """The product equals e4m3(x / s_row) · e4m3(W / s_out)ᵀ rescaled, computed by hand in fp64: the
    activations are quantised too, so it is not the weight-only product."""
    assert fp8_unavailable("cpu") is None  # torch 2.14's CPU _scaled_mm
    q = _net()
    quantize(q, "fp8")
    lin = q[0]
    x = torch.randn(3, 5, 64)  # leading dims are flattened to rows and restored
    rows = x.reshape(-1, 64).double()
    s = rows.abs().amax(dim=1, keepdim=True) / 448.0
    xq = (rows / s).float().to(torch.float8_e4m3fn).double() * s
    by_hand = xq @ lin.dequantized(torch.float64).t() + lin.bias.double()
    got = lin(x)
    assert got.shape == (3, 5, 128)
    assert torch.allclose(got.reshape(-1, 128).double(), by_hand, atol=1e-4, rtol=1e-4)
    weight_only = F.linear(x, lin.dequantized(), lin.bias)
    assert (got - weight_only).abs().max() > 1e-3
    with pytest.raises(TypeError, match="cast the model before"):
        q.to(torch.bfloat16)(x.bfloat16())


def test_dynamic_int8_is_close_and_its_state_dict_reloads_weights_only(tmp_path):
    ref = _net()
    q = dynamic_int8(ref)
    assert type(q[0]).__module__.startswith("torch.ao.nn.quantized.dynamic") and isinstance(ref[0], torch.nn.Linear)
    x = torch.randn(16, 64)
    rel = ((q(x) - ref(x)).norm() / ref(x).norm()).item()
    assert 1e-5 < rel < 0.05  # activations are quantised too: not exact
    torch.save(q.state_dict(), tmp_path / "m.pt")
    back = dynamic_int8(_net())
    back.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    assert torch.equal(back(x), q(x))
