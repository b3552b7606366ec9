from __future__ import annotations

import torch
from safetensors.torch import load_file, save_file

from genbuild.quant import Int8Linear, load_quantized, quantize, weight_bytes


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
