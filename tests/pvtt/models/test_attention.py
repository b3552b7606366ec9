"""Attention backends and torch.compile of the DiT (pvtt.models.attention): outputs match the default
within a stated tolerance on what this machine has; the kernels it lacks refuse naming the key."""
from __future__ import annotations

import importlib.util

import diffsynth.models.wan_video_dit as wan_dit
import pytest
import torch

from pvtt.models.attention import attention_backend, attention_function, compiled
from pvtt.models.dit import build_dit

TOLERANCE = 1e-5  # fp32 on the CPU: the kernels differ only in summation order


@pytest.fixture(scope="module")
def dit_and_inputs():
    dit = build_dit("tiny", 12, 0, prediction="source_residual").eval()
    with torch.no_grad():
        torch.nn.init.normal_(dit.wan.head.head.weight, std=0.05)  # a head that says something
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 12, 3, 4, 6, generator=g)
    inputs = (x, torch.tensor([700.0, 300.0]), torch.randn(x.shape, generator=g), torch.ones(2, 1, 3, 4, 6),
              torch.randn(2, 257, 1280, generator=g), torch.randn(2, 5, 32, generator=g))
    return dit, inputs


def test_math_reference_matches_sdpa_and_the_function_is_restored(dit_and_inputs):
    dit, inputs = dit_and_inputs
    before = wan_dit.flash_attention
    with torch.no_grad():
        with attention_backend("sdpa"):
            a = dit(*inputs)
        with attention_backend("math"):
            b = dit(*inputs)
    assert wan_dit.flash_attention is before
    assert (a - b).abs().max().item() <= TOLERANCE * a.abs().max().item()
    assert a.abs().max().item() > 0.1


@pytest.mark.parametrize("name", ["flash_attn", "sageattention"])
def test_a_kernel_this_machine_lacks_refuses_naming_the_key(name):
    module = {"flash_attn": "flash_attn", "sageattention": "sageattention"}[name]
    if importlib.util.find_spec(module) is not None and torch.cuda.is_available():
        pytest.skip(f"{name} runs here: make gpu-check compares it")
    with pytest.raises(ValueError, match=rf"deploy.attention: '{name}' .*use 'sdpa'"):
        attention_function(name)


def test_unknown_backend_names_the_known_ones():
    with pytest.raises(ValueError, match="deploy.attention: unknown 'xformers' .*sdpa, math, flash_attn, sageattention"):
        attention_function("xformers")


@pytest.mark.slow  # inductor compiles C++ for ~20 s
def test_compiled_matches_eager(dit_and_inputs):
    dit, inputs = dit_and_inputs
    model = compiled(dit, True)
    with torch.no_grad():
        a, b = dit(*inputs), model(*inputs)
    assert (a - b).abs().max().item() <= 1e-4 * a.abs().max().item()
    assert model.prediction == "source_residual" and compiled(dit, False) is dit
