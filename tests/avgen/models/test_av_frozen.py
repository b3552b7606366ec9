"""The frozen codecs: tiny stand-ins with the real factors, and loading the published folder layouts."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from avgen.models import frozen
from genbuild.weights import MissingWeightsError, WeightsError

# The published microsoft/speecht5_hifigan checkpoint's tensor names (weight norm removed, stats as buffers).
VOCODER_KEY_PREFIXES = ("conv_pre.", "upsampler.", "resblocks.", "conv_post.")


def frames(n: int = 3, h: int = 32, w: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# -- SD-VAE -----------------------------------------------------------------------------------------
def test_tiny_vae_has_the_sd_vae_factors_and_is_deterministic():
    vae = frozen.tiny_vae()
    assert sum(p.numel() for p in vae.parameters()) < 200_000
    z = frozen.encode_frames(vae, frames(), batch=2)
    assert z.shape == (4, 3, 4, 6) and z.dtype == torch.float32
    assert torch.equal(z, frozen.encode_frames(frozen.tiny_vae(), frames(), batch=2))  # seeded weights, posterior mean
    assert torch.allclose(z, frozen.encode_frames(vae, frames(), batch=16), atol=1e-5)  # chunking is only memory
    out = frozen.decode_latents(vae, z)
    assert out.shape == (3, 32, 48, 3) and out.dtype == np.uint8


def test_encode_frames_rejects_float_frames():
    with pytest.raises(ValueError, match="uint8 frames"):
        frozen.encode_frames(frozen.tiny_vae(), frames().astype(np.float32))


def test_load_vae_from_a_published_layout_folder(tmp_path):
    """Diffusers' folder (config.json + diffusion_pytorch_model.safetensors), here with the legacy attention
    names (query/key/value/proj_attn) that 2022-era SD-VAE checkpoints carry: Diffusers renames them on load."""
    vae = frozen.tiny_vae(seed=4)
    vae.save_pretrained(tmp_path / "vae")
    weights = tmp_path / "vae" / "diffusion_pytorch_model.safetensors"
    legacy = {"to_q.": "query.", "to_k.": "key.", "to_v.": "value.", "to_out.0.": "proj_attn."}
    state = load_file(weights)
    renamed = {}
    for k, v in state.items():
        for new, old in legacy.items():
            k = k.replace(f".attentions.0.{new}", f".attentions.0.{old}")
        renamed[k] = v
    assert any(".query." in k for k in renamed)
    save_file(renamed, weights)
    loaded = frozen.load_vae(tmp_path / "vae")
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert json.loads((tmp_path / "vae" / "config.json").read_text())["_class_name"] == "AutoencoderKL"
    assert torch.equal(frozen.encode_frames(loaded, frames()), frozen.encode_frames(vae, frames()))


def test_missing_vae_names_the_path(tmp_path):
    with pytest.raises(MissingWeightsError, match="sd-vae-ft-mse"):
        frozen.load_vae(tmp_path / "sd-vae-ft-mse")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="empty"):
        frozen.load_vae(tmp_path / "empty")


# -- HiFi-GAN vocoder ---------------------------------------------------------------------------------
def test_tiny_vocoder_turns_mel_frames_into_hop_256_samples():
    vocoder = frozen.tiny_vocoder()
    assert frozen.hop_length(vocoder) == 256 and vocoder.config.sampling_rate == 16000
    wave = frozen.vocode(vocoder, torch.randn(80, 20))
    assert wave.shape == (20 * 256,) and wave.dtype == np.float32 and np.abs(wave).max() <= 1.0
    with pytest.raises(ValueError, match=r"mel \(80, T\)"):
        frozen.vocode(vocoder, torch.randn(20, 80))


def test_vocoder_keys_are_the_published_checkpoints():
    keys = set(frozen.tiny_vocoder().state_dict())
    assert {"mean", "scale", "conv_pre.weight", "conv_post.weight", "upsampler.3.weight",
            "resblocks.0.convs1.0.weight", "resblocks.0.convs2.1.bias"} <= keys
    assert all(k in ("mean", "scale") or k.startswith(VOCODER_KEY_PREFIXES) for k in keys)
    assert not any("weight_g" in k or "weight_v" in k or "parametrizations" in k for k in keys)


@pytest.mark.parametrize("layout", ["model.safetensors", "pytorch_model.bin"])
def test_load_vocoder_from_a_published_layout_folder(tmp_path, layout):
    """Both files the published folder may hold; ``mean``/``scale`` (the mel statistics) load with the weights."""
    vocoder = frozen.tiny_vocoder(seed=2)
    with torch.no_grad():
        vocoder.mean.copy_(torch.linspace(-5, -1, 80))
        vocoder.scale.copy_(torch.linspace(1, 2, 80))
    folder = tmp_path / "speecht5_hifigan"
    vocoder.save_pretrained(folder)
    if layout == "pytorch_model.bin":
        state = load_file(folder / "model.safetensors")
        (folder / "model.safetensors").unlink()
        torch.save(state, folder / "pytorch_model.bin")
    loaded = frozen.load_vocoder(folder)
    assert torch.equal(loaded.mean, vocoder.mean) and torch.equal(loaded.scale, vocoder.scale)
    mel = torch.randn(80, 12)
    np.testing.assert_array_equal(frozen.vocode(loaded, mel), frozen.vocode(vocoder, mel))


def test_missing_vocoder_names_the_path(tmp_path):
    with pytest.raises(MissingWeightsError, match="speecht5_hifigan"):
        frozen.load_vocoder(tmp_path / "speecht5_hifigan")
