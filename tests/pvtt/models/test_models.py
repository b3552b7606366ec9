"""The model core on real classes: DiffSynth's Wan DiT, the codec, the encoders, sampling, DMD2, ONNX."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from genbuild.train.flow import flow_matching_loss, sample, sample_sigmas, sigma_schedule
from genbuild.train.methods.dmd2 import DMD2, DMDConfig
from genbuild.weights import MissingWeightsError
from pvtt.deploy.engine import OnnxDenoiser, export_onnx
from pvtt.models.bundle import components_from_params, load_bundle, new_bundle
from pvtt.models.codec import SpaceToDepthCodec, build_codec
from pvtt.models.conditions import Conditions
from pvtt.models.dit import PVTTDiT, build_dit, real_rope
from pvtt.models.encoders import HashedTextEncoder, TinyImageEncoder, reference_to_tensor

B, C, F, H, W = 2, 48, 4, 8, 12


def _cond(b=B):
    g = torch.Generator().manual_seed(0)
    return Conditions(torch.randn(b, C, F, H, W, generator=g), torch.rand(b, 1, F, H, W, generator=g),
                      torch.randn(b, 257, 1280, generator=g), torch.randn(b, 16, 32, generator=g))


def test_space_to_depth_codec_is_exact():
    codec = SpaceToDepthCodec(4)
    x = torch.rand(2, 3, 5, 16, 24) * 2 - 1
    z = codec.encode(x)
    assert z.shape == (2, 48, 5, 4, 6)
    assert torch.equal(codec.decode(z), x)
    m = codec.encode_mask(torch.ones(2, 1, 5, 16, 24))
    assert m.shape == (2, 1, 5, 4, 6) and torch.all(m == 1)
    with pytest.raises(ValueError, match="multiple"):
        codec.encode(torch.zeros(1, 3, 1, 10, 10))


def test_real_backends_name_missing_weights(tmp_path):
    with pytest.raises(MissingWeightsError, match="dvc pull"):
        build_codec({"kind": "wan_vae", "path": str(tmp_path / "Wan2.1_VAE.pth")})
    with pytest.raises(ValueError, match="codec.kind"):
        build_codec({"kind": "nope"})


def test_encoders_shapes_and_determinism():
    rgba = np.zeros((40, 20, 4), np.uint8)
    rgba[10:30, 5:15] = (255, 0, 0, 255)
    ref = reference_to_tensor(rgba, 64)
    assert ref.shape == (3, 64, 64) and ref.min() >= -1 and ref.max() <= 1
    enc = TinyImageEncoder(64, seed=3)
    a, b = enc(ref[None]), TinyImageEncoder(64, seed=3)(ref[None])
    assert a.shape == (1, 257, 1280) and torch.equal(a, b)
    txt = HashedTextEncoder(32)
    t = txt(["a red bag", "a blue watch"])
    assert t.shape == (2, 16, 32) and not torch.equal(t[0], t[1])


def test_dit_uses_diffsynth_wan_and_conditions_matter():
    from diffsynth.models.wan_video_dit import WanModel

    dit = build_dit("tiny", C, seed=0).eval()
    assert isinstance(dit.wan, WanModel) and dit.wan.has_image_input
    cond = _cond()
    x, t = torch.randn(B, C, F, H, W), torch.tensor([900.0, 100.0])
    with torch.no_grad():
        v = dit(x, t, cond.source, cond.mask, cond.image_tokens, cond.text_tokens)
        v_img = dit(x, t, cond.source, cond.mask, torch.zeros_like(cond.image_tokens), cond.text_tokens)
        v_src = dit(x, t, torch.zeros_like(cond.source), cond.mask, cond.image_tokens, cond.text_tokens)
    assert v.shape == x.shape
    assert (v - v_img).abs().max() > 1e-4, "reference image must reach the output"
    assert (v - v_src).abs().max() > 1e-4, "source video must reach the output"


def test_real_rope_equals_complex_rope():
    dit = build_dit("tiny", C, seed=1).eval()
    cond = _cond()
    args = (torch.randn(B, C, F, H, W), torch.tensor([500.0, 20.0]), cond.source, cond.mask, cond.image_tokens, cond.text_tokens)
    with torch.no_grad():
        ref = dit(*args)
        dit.use_real_rope = True
        with real_rope():
            out = dit(*args)
    assert (ref - out).abs().max() < 1e-4


def test_save_load_roundtrip(tmp_path):
    comps = components_from_params({"preset": "tiny"}, {"reference_size": 64})
    b = new_bundle(comps, seed=0)
    b.dit.save(tmp_path, extra={"components": comps, "shift": 3.0})
    b2 = load_bundle(tmp_path)
    for (k, v), (k2, v2) in zip(b.dit.state_dict().items(), b2.dit.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    with pytest.raises(FileNotFoundError, match="dvc pull"):
        PVTTDiT.load(tmp_path / "missing")


def test_flow_matching_training_reduces_loss():
    torch.manual_seed(0)
    dit = build_dit("tiny", C, seed=0).train()
    cond = _cond()
    x0 = torch.randn(B, C, F, H, W) * 0.5
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(dit.parameters(), lr=2e-3)
    sig, noise = sample_sigmas(B, 3.0, g), torch.randn(x0.shape, generator=g)
    first = flow_matching_loss(dit, x0, cond, sig, noise).item()
    for _ in range(30):
        loss = flow_matching_loss(dit, x0, cond, sig, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first


def test_sampler_schedule_and_cfg():
    s = sigma_schedule(4, 3.0)
    assert s[0] == 1 and s[-1] == 0 and torch.all(s[1:] < s[:-1])
    dit = build_dit("tiny", C, seed=0).eval()
    cond = _cond(1)
    noise = torch.randn(1, C, F, H, W, generator=torch.Generator().manual_seed(1))
    a = sample(dit, cond, noise, 4, 3.0, cfg_scale=1.0)
    b = sample(dit, cond, noise, 4, 3.0, cfg_scale=3.0)
    assert a.shape == noise.shape and (a - b).abs().max() > 1e-5
    assert torch.equal(a, sample(dit, cond, noise, 4, 3.0, cfg_scale=1.0))


def test_dmd2_step_updates_generator_and_fake_only():
    teacher = build_dit("tiny", C, seed=0)
    student = build_dit("tiny", C, seed=0)
    student.load_state_dict(teacher.state_dict())
    t_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    dmd = DMD2(student, teacher, DMDConfig(steps=4, iterations=1, lr=1e-3, fake_lr=1e-3, cfg_scale=3.0,
                                           critic_steps=2, regression_weight=0.25, shift=3.0, batch_size=B))
    f_before = {k: v.clone() for k, v in dmd.fake.state_dict().items()}
    out = dmd.step(torch.randn(B, C, F, H, W), _cond())
    assert np.isfinite(out["dmd"]) and np.isfinite(out["critic"])
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in t_before.items()), "teacher must stay frozen"
    assert any(not torch.equal(v, dmd.fake.state_dict()[k]) for k, v in f_before.items()), "fake score must train"
    assert any(not torch.equal(v, student.state_dict()[k]) for k, v in t_before.items()), "generator must train"


def test_onnx_export_matches_pytorch(tmp_path):
    dit = build_dit("tiny", C, seed=0).eval()
    cond = _cond(1)
    ex = (torch.randn(1, C, F, H, W), torch.tensor([400.0]), cond.source, cond.mask, cond.image_tokens, cond.text_tokens)
    export_onnx(dit, ex, tmp_path / "m.onnx", 17)
    ort = OnnxDenoiser(tmp_path / "m.onnx")
    with torch.no_grad():
        assert (ort(*ex) - dit(*ex)).abs().max() < 1e-4
    noise = torch.randn(1, C, F, H, W, generator=torch.Generator().manual_seed(2))
    assert (sample(ort, cond, noise, 4, 3.0) - sample(dit, cond, noise, 4, 3.0)).abs().max() < 1e-3


def test_source_residual_model_starts_from_the_template():
    """An untrained source-residual DiT reproduces the source exactly: training only learns the edit."""
    dit = build_dit("tiny", C, seed=0, prediction="source_residual").eval()
    cond = _cond(1)
    noise = torch.randn(1, C, F, H, W, generator=torch.Generator().manual_seed(3))
    out = sample(dit, cond, noise, 8, 3.0, cfg_scale=3.0)
    assert (out - cond.source).abs().max() < 1e-4
    with pytest.raises(ValueError, match="model.prediction"):
        build_dit("tiny", C, seed=0, prediction="eps")


def _hard_mask_cond(b=1):
    cond = _cond(b)
    mask = torch.zeros_like(cond.mask)
    mask[..., 2:6, 3:8] = 1.0
    return Conditions(cond.source, mask, cond.image_tokens, cond.text_tokens)


def test_masked_source_input_blanks_the_edit_region_before_encoding():
    """``model.source_input: masked``: the source's pixels under the mask never reach the
    conditions (the old product cannot be copied); the rest is the source's, exactly with the
    space-to-depth codec; ``full`` keeps everything."""
    comps = {s: components_from_params({"preset": "tiny", "source_input": s}, {"reference_size": 64}) for s in ("full", "masked")}
    g = torch.Generator().manual_seed(5)
    video = torch.rand(1, 3, 4, 32, 48, generator=g) * 2 - 1
    mask = torch.zeros(1, 1, 4, 32, 48)
    mask[..., 6:19, 10:27] = 1.0
    other = torch.where(mask > 0, torch.rand(video.shape, generator=g), video)
    full, masked = (new_bundle(comps[s], seed=0) for s in ("full", "masked"))
    assert torch.equal(masked.encode_source(video, mask), masked.encode_source(other, mask))
    assert not torch.equal(full.encode_source(video, mask), full.encode_source(other, mask))
    decoded = masked.codec.decode(masked.encode_source(video, mask))
    assert torch.equal(decoded[:, :, :, mask[0, 0, 0] == 0], video[:, :, :, mask[0, 0, 0] == 0])
    assert (decoded[:, :, :, mask[0, 0, 0] > 0] == 0).all()
    with pytest.raises(ValueError, match="model.source_input"):
        components_from_params({"preset": "tiny", "source_input": "half"}, {"reference_size": 64})


def test_keep_background_holds_the_source_outside_the_grown_mask():
    """Latent blending (``KeepRegion``): the sampled latents equal the source outside the mask
    grown by ``dilate`` cells, whatever the model does there; inside, the model's own output."""
    dit = build_dit("tiny", C, seed=0).eval()
    cond = _hard_mask_cond()
    noise = torch.randn(1, C, F, H, W, generator=torch.Generator().manual_seed(4))
    keep = cond.keep_background(1)
    kept = keep.weight.expand_as(cond.source) > 0
    assert kept.sum() < (cond.mask == 0).expand_as(cond.source).sum()  # the grown mask keeps less
    free = sample(dit, cond, noise, 6, 3.0)
    held = sample(dit, cond, noise, 6, 3.0, keep=keep)
    assert (held[kept] - cond.source[kept]).abs().max() < 1e-5
    assert (free[kept] - cond.source[kept]).abs().max() > 1e-2  # the model alone does not keep it
    assert (held[~kept] - free[~kept]).abs().max() > 0          # inside, the blend changes the path
