"""Starting the PVTT DiT from a base Wan DiT: at step 0 its output is the base model's.

The base is a real DiffSynth ``WanModel`` (T2V layout, the tiny preset's shapes, random
weights) saved as a local safetensors checkpoint; the reference output comes from DiffSynth's
own Wan model function, not from our forward.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffsynth.models.wan_video_dit import WanModel
from diffsynth.pipelines.wan_video import model_fn_wan_video
from safetensors.torch import save_file

from genbuild.weights import MissingWeightsError
from pvtt.models.base import init_from_base, load_base_state
from pvtt.models.dit import PRESETS, build_dit

C = 48  # space-to-depth codec channels (3 x 4 x 4)


def _base_t2v(seed: int = 3, **over) -> WanModel:
    a = {**PRESETS["tiny"], **over}
    torch.manual_seed(seed)
    m = WanModel(dim=a["dim"], in_dim=C, ffn_dim=a["ffn_dim"], out_dim=C, text_dim=a["text_dim"],
                 freq_dim=a["freq_dim"], eps=a["eps"], patch_size=tuple(a["patch_size"]), num_heads=a["num_heads"],
                 num_layers=a["num_layers"], has_image_input=False)
    for p in m.parameters():  # Wan zero-inits some layers; random everywhere makes the test sharper
        torch.nn.init.normal_(p, std=0.05)
    return m.eval()


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory):
    base = _base_t2v()
    path = tmp_path_factory.mktemp("base") / "diffusion_pytorch_model.safetensors"
    save_file({k: v.contiguous() for k, v in base.state_dict().items()}, str(path))
    return base, path


def _inputs(seed: int, b: int = 2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, C, 2, 4, 4, generator=g)
    t = torch.tensor([250.0, 800.0][:b])
    source = torch.randn(b, C, 2, 4, 4, generator=g)
    mask = (torch.rand(b, 1, 2, 4, 4, generator=g) > 0.5).float()
    image = torch.randn(b, 257, 1280, generator=g)
    text = torch.randn(b, 5, PRESETS["tiny"]["text_dim"], generator=g)
    return x, t, source, mask, image, text


def test_step0_output_equals_the_base_model(base_ckpt):
    base, path = base_ckpt
    dit = build_dit("tiny", C, seed=0, prediction="velocity").eval()
    report = init_from_base(dit, load_base_state(path))
    assert report["unused"] == [] and "patch_embedding.weight[:, 48:]" in report["zeroed"]
    assert any(n.endswith("cross_attn.v_img.weight") for n in report["zeroed"])
    x, t, source, mask, image, text = _inputs(0)
    with torch.no_grad():
        want = model_fn_wan_video(dit=base, latents=x, timestep=t, context=text)
        got = dit(x, t, source, mask, image, text)
        # Other source, mask and reference image: still the base's output (they start with no effect).
        _, _, source2, mask2, image2, _ = _inputs(1)
        got2 = dit(x, t, source2, mask2, image2, text)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert torch.allclose(got2, want, atol=1e-5)


def test_new_conditioning_is_trainable(base_ckpt):
    """Zero is a starting point, not a freeze: the new weights get gradients at step 0."""
    _, path = base_ckpt
    dit = build_dit("tiny", C, seed=0, prediction="velocity").train()
    init_from_base(dit, load_base_state(path))
    x, t, source, mask, image, text = _inputs(0)
    dit(x, t, source, mask, image, text).square().mean().backward()
    assert dit.wan.patch_embedding.weight.grad[:, C:].abs().sum() > 0
    assert dit.wan.blocks[0].cross_attn.v_img.weight.grad.abs().sum() > 0


def test_wrong_preset_source_residual_and_missing_file_are_named(base_ckpt, tmp_path):
    _, path = base_ckpt
    wider = _base_t2v(dim=192, num_heads=4)
    p = tmp_path / "wider.safetensors"
    save_file({k: v.contiguous() for k, v in wider.state_dict().items()}, str(p))
    with pytest.raises(ValueError, match="wrong preset"):
        init_from_base(build_dit("tiny", C, 0, "velocity"), load_base_state(p))
    with pytest.raises(ValueError, match="model.prediction: velocity"):
        init_from_base(build_dit("tiny", C, 0, "source_residual"), load_base_state(path))
    with pytest.raises(MissingWeightsError, match="models/wan/absent.safetensors"):
        load_base_state("models/wan/absent.safetensors")


def test_dinov2_reference_encoder_is_selectable_and_starts_at_zero(base_ckpt, tmp_path):
    """DINOv2 (a real transformers Dinov2Model, tiny and random, loaded from a local directory)
    instead of CLIP ViT-H: its 257 tokens of its own width enter through an img_emb of that
    width, and at step 0 the output is still the base model's, whatever the reference image."""
    from transformers import Dinov2Config, Dinov2Model

    from pvtt.models.bundle import components_from_params, new_bundle
    from pvtt.models.encoders import reference_to_tensor

    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=48, num_hidden_layers=1, num_attention_heads=2, intermediate_size=96,
                             image_size=224, patch_size=14)).save_pretrained(tmp_path / "dinov2")
    comp = components_from_params({"preset": "tiny", "prediction": "velocity",
                                   "image_encoder": {"kind": "dinov2", "path": str(tmp_path / "dinov2")}},
                                  {"reference_size": 64})
    bundle = new_bundle(comp, seed=0)
    assert bundle.dit.wan.img_emb.proj[1].in_features == 48 and bundle.dit.arch["image_dim"] == 48
    base, path = base_ckpt
    init_from_base(bundle.dit, load_base_state(path))
    rng = np.random.default_rng(0)
    refs = [reference_to_tensor(rng.integers(0, 255, (40, 30, 4), dtype=np.uint8), 64) for _ in range(2)]
    tokens = bundle.image_encoder(torch.stack(refs))
    assert tokens.shape == (2, 257, 48) and not torch.allclose(tokens[0], tokens[1])
    x, t, source, mask, _, text = _inputs(0)
    dit = bundle.dit.eval()
    with torch.no_grad():
        want = model_fn_wan_video(dit=base, latents=x, timestep=t, context=text)
        got = dit(x, t, source, mask, tokens, text)
        got_swapped = dit(x, t, source, mask, tokens.flip(0), text)
    assert torch.allclose(got, want, atol=1e-5) and torch.allclose(got_swapped, want, atol=1e-5)
    with pytest.raises(MissingWeightsError, match="DINOv2"):
        components_from_params({"image_encoder": {"kind": "dinov2", "path": str(tmp_path / "nope")}}, {"reference_size": 64})
        new_bundle(components_from_params({"image_encoder": {"kind": "dinov2", "path": str(tmp_path / "nope")}},
                                          {"reference_size": 64}), seed=0)
