"""DMD2's generator terms (pvtt.train.distill_losses, genbuild.train.methods.adversarial): each
one, turned on, changes the student's gradient; each is computed on real model classes."""
from __future__ import annotations

import copy

import pytest
import torch

from genbuild.train.methods.dmd2 import DMD2, DMDConfig
from genbuild.train.methods.student import GeneratorTerm
from pvtt.models.bundle import components_from_params, new_bundle
from pvtt.models.conditions import Conditions
from pvtt.train import distill_losses as L

B, F, H, W, REF = 2, 3, 32, 48, 32


@pytest.fixture(scope="module")
def setup():
    comps = components_from_params({"preset": "tiny", "prediction": "source_residual", "source_input": "masked"},
                                   {"reference_size": REF})
    bundle = new_bundle(comps, seed=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # as if trained: a zero head would give every term at the source a zero gradient
        head = bundle.dit.wan.head.head
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.02)
    video = torch.rand(B, 3, F, H, W, generator=g) * 2 - 1
    mask = torch.zeros(B, 1, F, H, W)
    mask[..., 8:24, 12:32] = 1.0
    ref = torch.rand(B, 3, REF, REF, generator=g) * 2 - 1
    with torch.no_grad():
        cond = Conditions(bundle.encode_source(video, mask), bundle.codec.encode_mask(mask), bundle.image_encoder(ref),
                          bundle.text_encoder(["a red cup", "a blue box"]))
        x0 = bundle.codec.encode(video)
    return bundle, cond, x0


def _cfg(**over):
    return DMDConfig(**{"steps": 4, "iterations": 1, "lr": 1e-3, "fake_lr": 1e-3, "cfg_scale": 1.0, "critic_steps": 1,
                        "regression_weight": 0.25, "shift": 3.0, "batch_size": B, **over})


def _generator_grad(bundle, cond, x0, **dmd_kw) -> list[torch.Tensor]:
    """The student's gradient of one generator loss, everything else (seeds, draws) equal."""
    torch.manual_seed(0)
    dmd = DMD2(copy.deepcopy(bundle.dit), copy.deepcopy(bundle.dit), _cfg(**dmd_kw.pop("cfg", {})), **dmd_kw)
    dmd.full, dmd.mine = B, slice(None)
    x, s = dmd._simulate(cond, x0.shape)
    losses = dmd.generator_losses(dmd._generate(x, s, cond), x0, cond)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    dmd.loss_total(losses).backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in dmd.generator.parameters()]


def _differ(a, b) -> bool:
    return any((x - y).abs().max() > 1e-9 for x, y in zip(a, b))


@pytest.mark.parametrize("name", L.TERMS)
def test_each_term_changes_the_students_gradient(setup, name):
    bundle, cond, x0 = setup
    terms, _ = L.build_terms({name: {"weight": 1.0}}, bundle, REF)
    assert list(terms) == [name]
    off = _generator_grad(bundle, cond, x0)
    on = _generator_grad(bundle, cond, x0, terms=terms)
    assert _differ(off, on)


def test_term_values_respond_to_what_they_measure(setup):
    """Background is 0 when the student gives the source back outside the mask, whatever it does
    inside; temporal is near 0 for a still clip, far from it for a changing one."""
    bundle, cond, x0 = setup
    keep = 1 - (cond.mask.amax(1, keepdim=True) > 0).float()
    inside_changed = cond.source * keep + torch.randn_like(x0) * (1 - keep)
    assert L.background_loss(inside_changed, x0, cond) == pytest.approx(0.0, abs=1e-12)
    assert L.background_loss(cond.source + 0.1 * torch.randn_like(x0), x0, cond) > 1e-3
    still = bundle.codec.encode(bundle.codec.decode(x0)[:, :, :1].expand(-1, -1, F, -1, -1).contiguous())
    temporal = L.temporal_loss(bundle.codec)
    calm = temporal(still, x0, cond)
    assert calm < 0.01 and 10 * calm < temporal(x0, x0, cond)


def test_pixel_regression_takes_lpips_and_a_vae_falls_back_to_latents(setup):
    """With LPIPS (the real lpips class, random weights: nothing downloaded) the regression's
    gradient differs from plain MSE; a codec that decodes without gradients gets latent MSE and
    refuses the pixel-space terms, naming the key."""
    import lpips

    bundle, cond, x0 = setup
    net = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False).requires_grad_(False)
    plain = _generator_grad(bundle, cond, x0, regression=L.pixel_regression(bundle.codec))
    with_lpips = _generator_grad(bundle, cond, x0, regression=L.pixel_regression(bundle.codec, net))
    assert _differ(plain, with_lpips)

    class Vae:
        codec = object()
        components = {"codec": {"kind": "wan_vae"}}
    _, regression = L.build_terms({"background": {"weight": 1.0}}, Vae(), REF)
    assert regression is L.latent_mse
    with pytest.raises(ValueError, match="distill.common.losses.temporal.weight"):
        L.build_terms({"temporal": {"weight": 0.5}}, Vae(), REF)


def test_adversarial_term_changes_the_gradient_and_its_head_trains_with_the_critic(setup):
    bundle, cond, x0 = setup
    off = _generator_grad(bundle, cond, x0)
    on = _generator_grad(bundle, cond, x0, adversarial=L.adversarial({"weight": 1.0}, bundle.dit, 0))
    assert _differ(off, on)
    torch.manual_seed(0)
    dmd = DMD2(copy.deepcopy(bundle.dit), copy.deepcopy(bundle.dit), _cfg(critic_steps=2),
               adversarial=L.adversarial({"weight": 0.5, "block": 0}, bundle.dit, 0))
    head = copy.deepcopy(dmd.adversarial.head.state_dict())
    row = dmd.step(x0, cond)
    assert {"gan", "gan_critic"} <= set(row) and row["gan_critic"] > 0
    assert any(not torch.equal(head[k], v) for k, v in dmd.adversarial.head.state_dict().items())
    assert "head" in dmd.state_dict()


def test_a_zero_weight_is_off(setup):
    bundle, cond, x0 = setup
    terms, _ = L.build_terms({"temporal": {"weight": 0.0}, "background": {"weight": 0}}, bundle, REF)
    assert terms == {} and L.adversarial({"weight": 0.0}, bundle.dit, 0) is None
    dmd = DMD2(copy.deepcopy(bundle.dit), copy.deepcopy(bundle.dit), _cfg(),
               terms={"x": GeneratorTerm(0.0, L.background_loss)})
    assert dmd.columns == ("dmd", "regression", "critic")
