"""The engine stage's calibrated INT8 model, its TensorRT plumbing where TensorRT is absent, and the
start-up rules of ``engine.*`` (the whole stage runs in the e2e build)."""
from __future__ import annotations

import copy

import onnx
import pytest
import torch

from genbuild.train.flow import sample
from pvtt.deploy import forms, tensorrt_engine
from pvtt.deploy.engine import _tensorrt_forms, check_params
from pvtt.deploy.onnx_engine import INPUT_NAMES, OnnxDenoiser, calibration_feeds, export_onnx, to_int8_qdq
from pvtt.models.conditions import Conditions
from pvtt.models.dit import build_dit

C, F, H, W = 48, 4, 8, 12
STEPS, SHIFT = 4, 3.0


def _cond(seed: int) -> Conditions:
    g = torch.Generator().manual_seed(seed)
    return Conditions(torch.randn(1, C, F, H, W, generator=g), torch.rand(1, 1, F, H, W, generator=g),
                      torch.randn(1, 257, 1280, generator=g), torch.randn(1, 16, 32, generator=g))


def _noise(seed: int) -> torch.Tensor:
    return torch.randn(1, C, F, H, W, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def dit():
    return build_dit("tiny", C, seed=0).eval()


def test_calibration_feeds_are_every_sampling_call_of_every_item(dit):
    conds, noises = [_cond(1), _cond(2)], [_noise(3), _noise(4)]
    feeds = calibration_feeds(dit, conds, noises, STEPS, SHIFT)
    assert len(feeds) == 2 * STEPS and list(feeds[0]) == INPUT_NAMES
    assert torch.equal(torch.from_numpy(feeds[0]["x_t"]), noises[0])  # the first call sees the item's noise
    assert feeds[0]["timestep"][0] == pytest.approx(1000.0)  # ... at the top of the schedule
    assert (torch.from_numpy(feeds[STEPS]["source"]) == conds[1].source).all()  # the second item's calls follow
    later = torch.from_numpy(feeds[1]["x_t"])
    assert not torch.equal(later, noises[0])  # a later call sees the partly denoised latents, not noise


def test_static_int8_qdq_model_is_calibrated_symmetric_and_close(dit, tmp_path):
    cond, noise = _cond(1), _noise(5)
    ex = (noise, torch.tensor([500.0]), cond.source, cond.mask, cond.image_tokens, cond.text_tokens)
    export_onnx(dit, ex, tmp_path / "m.onnx", 17)
    to_int8_qdq(tmp_path / "m.onnx", tmp_path / "q.onnx", calibration_feeds(dit, [cond, _cond(2)], [_noise(3), _noise(4)],
                                                                          STEPS, SHIFT))
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    zero_points = [inits[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zero_points and all((z == 0).all() for z in zero_points)  # symmetric, as TensorRT requires
    q = OnnxDenoiser(tmp_path / "q.onnx")
    with torch.no_grad():
        ref = dit(*ex)
        err = (q(*ex) - ref).abs().max().item()
    assert 1e-4 < err < 0.1 * ref.abs().max().item()  # quantised (not exact), but close
    assert (sample(q, cond, noise, STEPS, SHIFT) - sample(dit, cond, noise, STEPS, SHIFT)).abs().max() < 0.5
    with pytest.raises(ValueError, match="no calibration inputs"):
        to_int8_qdq(tmp_path / "m.onnx", tmp_path / "none.onnx", [])


def _engine_params(**tensorrt) -> dict:
    return {"onnx": ["onnx", "onnx_fp16", "onnx_int8_qdq"], "tensorrt": {"build": "auto", "precisions": ["fp16", "int8"], **tensorrt}}


def test_engine_params_are_checked_at_start_naming_the_key():
    check_params(_engine_params())
    ep = _engine_params()
    ep["onnx"] = ["onnx", "onnx_fp16"]
    with pytest.raises(ValueError, match="engine.tensorrt.precisions: int8 builds from the onnx_int8_qdq model; add "):
        check_params(ep)
    check_params({**ep, "tensorrt": {"build": "off", "precisions": ["int8"]}})  # nothing to build from: fine
    with pytest.raises(ValueError, match="engine.onnx: unknown form 'onnx_int4'"):
        check_params({**_engine_params(), "onnx": ["onnx_int4"]})


@pytest.mark.skipif(tensorrt_engine.unavailable() is None, reason="this machine can build TensorRT plans")
def test_without_tensorrt_each_plan_says_why_and_require_stops(tmp_path):
    reason = tensorrt_engine.unavailable()
    assert "tensorrt" in reason or "CUDA" in reason
    got = _tensorrt_forms(tmp_path, _engine_params()["tensorrt"])
    assert got == {"tensorrt_fp16": {"built": False, "reason": reason}, "tensorrt_int8": {"built": False, "reason": reason}}
    off = _tensorrt_forms(tmp_path, {"build": "off", "precisions": ["fp16"]})
    assert off["tensorrt_fp16"]["reason"] == "engine.tensorrt.build is 'off'"
    with pytest.raises(RuntimeError, match="engine.tensorrt.build is 'require' but"):
        check_params(_engine_params(build="require"))


@pytest.mark.skipif(tensorrt_engine.unavailable() is None, reason="this machine can run TensorRT plans")
def test_a_plan_from_a_gpu_machine_is_listed_but_not_loaded_here(tmp_path):
    """An engine artifact built on a GPU host (pulled with DVC) still serves its CPU forms here."""
    from genbuild.io.jsonio import write_json

    entry = {"built": True, "file": "student_4_fp16.plan", "precision": "fp16"}
    write_json(tmp_path / "check.json", {"engines": {"onnx": {"built": True, "file": "student_4.onnx"},
                                                     "tensorrt_fp16": copy.deepcopy(entry)}})
    assert forms.built(tmp_path) == ["onnx"]
    with pytest.raises(ValueError, match="'tensorrt_fp16' is a TensorRT plan; "):
        forms.load(tmp_path, "tensorrt_fp16")
