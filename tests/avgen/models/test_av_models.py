"""AVGen-DiT's network, conditions and sampler at the tiny preset: shapes, init, persistence, learning, sampling."""
import copy

import pytest
import torch

from avgen.models.backbone import UnifiedDiT
from avgen.models.conditions import AVConditions, pack, unpack
from avgen.models.network import AVGenNetwork
from avgen.models.presets import PRESETS, build
from avgen.models.sampling import make_scheduler, sample, set_kit_schedule
from genbuild.train import flow
from genbuild.train.conditioning import Conditioning

B = 2


def make_batch(frames: int = 2, size: int = 8, mel_frames: int = 21, seed: int = 0):
    """A tiny batch: (B, 4, F, h, w) latents, (B, 80, T) mel (T not a multiple of the audio patch), text embeddings."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, 4, frames, size, size, generator=g), torch.randn(B, 80, mel_frames, generator=g),
            torch.randn(B, 512, generator=g), torch.randn(B, 512, generator=g))


def perturbed(net: AVGenNetwork, seed: int = 1) -> AVGenNetwork:
    """A copy whose zero-initialised weights and gates are random: every path then contributes."""
    net = copy.deepcopy(net)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return net


@pytest.fixture(scope="module")
def tiny():
    return build("tiny", seed=0)


def t_of(sigma: float = 0.5) -> torch.Tensor:
    return torch.full((B,), sigma * 1000.0)


# -- shapes and init ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["joint", "video", "audio"])
def test_forward_shapes_per_modality(tiny, mode):
    video, audio, clip, clap = make_batch()
    v_in = video if mode != "audio" else None
    a_in = audio if mode != "video" else None
    v, a = perturbed(tiny)(v_in, a_in, t_of(), clip, clap)
    assert (v is None) == (v_in is None) and (a is None) == (a_in is None)
    if v is not None:
        assert v.shape == video.shape and torch.isfinite(v).all()
    if a is not None:
        assert a.shape == audio.shape and torch.isfinite(a).all()


def test_untrained_network_predicts_zero_velocity(tiny):
    """The decoders' last layers start at zero: training starts from a zero velocity, not noise."""
    v, a = tiny(*make_batch()[:2], t_of(), *make_batch()[2:])
    assert not v.any() and not a.any()


def test_joint_attention_mixes_modalities(tiny):
    """In a joint batch the video velocity depends on the audio (the one sequence, the alignment module)."""
    net = perturbed(tiny)
    video, audio, clip, clap = make_batch()
    v1, _ = net(video, audio, t_of(), clip, clap)
    v2, _ = net(video, audio + 1.0, t_of(), clip, clap)
    assert (v1 - v2).abs().max() > 1e-4


def test_alignment_is_identity_at_init_and_without_a_partner(tiny):
    video, audio, clip, clap = make_batch()
    tokens = tiny.backbone(video, audio, t_of(), clip, clap)
    v, a = tiny.alignment(tokens.video, tokens.audio, tokens.video_grid)
    assert torch.equal(v, tokens.video) and torch.equal(a, tokens.audio)
    aligned = perturbed(tiny).alignment
    v, a = aligned(tokens.video, tokens.audio, tokens.video_grid)
    assert not torch.allclose(v, tokens.video)
    v, a = aligned(tokens.video, None, tokens.video_grid)
    assert torch.equal(v, tokens.video) and a is None


def test_video_decoder_pads_and_upsamples_for_other_patches():
    """Latent sizes the patch does not tile are padded in and cropped out; a 4x4 patch upsamples in two stages."""
    config = copy.deepcopy(PRESETS["tiny"])
    for name in ("backbone", "video_decoder"):
        config[name]["patch_size"] = [2, 4, 4]
    config["video_decoder"]["layers"] = 3
    net = perturbed(build(config))
    video, audio, clip, clap = make_batch(frames=3, size=10)
    v, a = net(video, audio, t_of(), clip, clap)
    assert v.shape == video.shape and a.shape == audio.shape


def test_mismatched_module_configs_fail_by_name():
    config = copy.deepcopy(PRESETS["tiny"])
    config["audio_decoder"]["audio_patch"] = 4
    with pytest.raises(ValueError, match="audio_decoder.audio_patch"):
        build(config)


def test_text_width_mismatch_fails_clearly(tiny):
    video, audio, clip, clap = make_batch()
    with pytest.raises(ValueError, match="clip_dim=512"):
        tiny(video, audio, t_of(), clip[:, :300], clap)


def test_gradient_checkpointing_gives_the_same_gradients(tiny):
    video, audio, clip, clap = make_batch()
    grads = []
    for checkpointing in (False, True):
        net = perturbed(tiny)
        if checkpointing:
            net.enable_gradient_checkpointing()
            assert net.backbone.gradient_checkpointing and net.video_decoder.gradient_checkpointing
        v, a = net(video, audio, t_of(), clip, clap)
        (v.square().mean() + a.square().mean()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


# -- persistence ----------------------------------------------------------------------------------
def test_save_and_load_round_trip(tiny, tmp_path):
    net = perturbed(tiny)
    net.save_pretrained(tmp_path / "net")
    for name in ("backbone", "alignment", "audio_decoder", "video_decoder"):
        assert (tmp_path / "net" / name / "config.json").exists()
        assert (tmp_path / "net" / name / "diffusion_pytorch_model.safetensors").exists()
    loaded = AVGenNetwork.from_pretrained(tmp_path / "net")
    assert isinstance(loaded.backbone, UnifiedDiT) and loaded.config == net.config
    batch = make_batch()
    for got, want in zip(loaded(*batch[:2], t_of(0.3), *batch[2:]), net(*batch[:2], t_of(0.3), *batch[2:])):
        assert torch.equal(got, want)


def test_loading_a_missing_network_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        AVGenNetwork.from_pretrained(tmp_path / "nowhere")


# -- conditions: the kit's protocol over a flat joint target ---------------------------------------
def test_conditions_pack_unpack_and_protocol():
    video, audio, clip, clap = make_batch()
    cond = AVConditions.for_targets(clip, clap, video, audio)
    assert isinstance(cond, Conditioning) and cond.modality == "joint"
    flat = pack(video, audio)
    assert flat.shape == (B, cond.numel)
    v, a = unpack(flat, cond)
    assert torch.equal(v, video) and torch.equal(a, audio)
    only_audio = AVConditions.for_targets(clip, clap, audio=audio)
    assert only_audio.modality == "audio" and unpack(pack(None, audio), only_audio)[0] is None
    with pytest.raises(ValueError, match="values per sample"):
        unpack(flat, only_audio)
    null = cond.null()
    assert not null.clip_text.any() and not null.clap_text.any() and null.video_shape == cond.video_shape
    dropped = cond.drop(torch.tensor([True, False]))
    assert torch.equal(dropped.clip_text[0], clip[0]) and not dropped.clap_text[1].any()
    assert cond.select(torch.tensor([1])).clip_text.shape == (1, 512)


@pytest.mark.parametrize("mode", ["joint", "audio", "video"])
def test_flow_matching_training_reduces_the_loss(mode):
    """The kit's objective on the flat target, a few AdamW steps on one fixed batch: the loss goes down."""
    video, audio, clip, clap = make_batch()
    cond = AVConditions.for_targets(clip, clap, video if mode != "audio" else None, audio if mode != "video" else None)
    x0 = pack(video if cond.has_video else None, audio if cond.has_audio else None)
    net = build("tiny", seed=0)
    g = torch.Generator().manual_seed(0)
    sigma, noise = flow.sample_sigmas(B, 3.0, g), torch.randn(x0.shape, generator=g)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = flow.flow_matching_loss(net, x0, cond, sigma, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


# -- sampling ---------------------------------------------------------------------------------------
def test_scheduler_sigmas_are_the_kits():
    scheduler = make_scheduler(3.0)
    set_kit_schedule(scheduler, 8)
    assert torch.allclose(scheduler.sigmas, flow.sigma_schedule(8, 3.0), atol=1e-6)
    assert torch.allclose(scheduler.timesteps, scheduler.sigmas[:-1] * 1000)


@pytest.mark.parametrize("mode,cfg", [("joint", 2.5), ("audio", 1.0)])
def test_diffusers_sampler_agrees_with_the_kit(tiny, mode, cfg):
    video, audio, clip, clap = make_batch()
    cond = AVConditions.for_targets(clip, clap, video if mode == "joint" else None, audio)
    net = perturbed(tiny)
    noise = torch.randn(B, cond.numel, generator=torch.Generator().manual_seed(3))
    v, a = sample(net, cond, 5, torch.Generator(), shift=3.0, cfg_scale=cfg, noise=noise)
    want = flow.sample(net, cond, noise, 5, 3.0, cfg_scale=cfg)
    assert (v is None) == (mode == "audio") and a.shape == audio.shape
    assert (pack(v, a) - want).abs().max() < 1e-4


def test_sampling_is_reproducible_from_the_generator(tiny):
    video, audio, clip, clap = make_batch()
    cond = AVConditions.for_targets(clip, clap, video, audio)
    net = perturbed(tiny)
    first = sample(net, cond, 2, torch.Generator().manual_seed(5))
    again = sample(net, cond, 2, torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(first, again))
