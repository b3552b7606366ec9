"""The frozen codecs around AVGen-DiT: SD-VAE (frames <-> 4-channel latents) and HiFi-GAN (mel -> waveform).

Real runs load the published weights from local folders in their published layouts
(stabilityai/sd-vae-ft-mse: config.json + diffusion_pytorch_model.safetensors, read by
``diffusers.AutoencoderKL``; microsoft/speecht5_hifigan: config.json + pytorch_model.bin or
model.safetensors, read by ``transformers.SpeechT5HifiGan``). Nothing is downloaded; a missing
folder stops with an error naming it. The sample and CI use the same classes at tiny width with
seeded weights (``tiny_vae``, ``tiny_vocoder``): same shapes and factors (8x spatial, hop 256),
meaningless content, seconds on a CPU.

Encoding is deterministic (the posterior mean, not a sample), so the features stage gives the
same latents on every run and DVC's cache hits.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

from genbuild.weights import require_weights, weights_error

VAE_FACTOR = 8      # SD-VAE: 4 down blocks = 3 halvings
HOP = 256           # SpeechT5 HiFi-GAN: 4 x 4 x 4 x 4 upsampling, 16 ms at 16 kHz
MEL_BINS = 80
SAMPLE_RATE = 16000


# -- SD-VAE ---------------------------------------------------------------------------------------
def tiny_vae(seed: int = 0) -> AutoencoderKL:
    """SD-VAE's architecture (4 blocks, factor 8, 4 latent channels) at a few thousand parameters, seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=4,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 16, 16), sample_size=64)
    return vae.eval().requires_grad_(False)


def load_vae(path: str | Path, dtype: torch.dtype = torch.float32) -> AutoencoderKL:
    """SD-VAE from a local Diffusers folder (e.g. stabilityai/sd-vae-ft-mse)."""
    p = require_weights(path, "SD-VAE (AutoencoderKL)")
    if not (p / "config.json").exists():
        raise weights_error("SD-VAE (AutoencoderKL)", p, "avgen.features.vae.path", "is not a Diffusers folder",
                            FileNotFoundError(f"{p / 'config.json'} missing"))
    vae = AutoencoderKL.from_pretrained(p, local_files_only=True, torch_dtype=dtype)
    return vae.eval().requires_grad_(False)


def _latent_scale(vae: AutoencoderKL) -> tuple[float, float]:
    """(shift, scale) mapping the posterior to unit-variance latents (SD-VAE: no shift, 0.18215)."""
    return float(vae.config.get("shift_factor") or 0.0), float(vae.config.scaling_factor)


@torch.no_grad()
def encode_frames(vae: AutoencoderKL, frames: np.ndarray | torch.Tensor, batch: int = 16) -> torch.Tensor:
    """uint8 frames (F, H, W, 3) -> scaled latents (4, F, H/8, W/8), float32, from the posterior mean.

    ``batch`` frames go through the VAE at a time (memory is bounded on long clips)."""
    x = torch.as_tensor(np.asarray(frames))
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"encode_frames: want uint8 frames (F, H, W, 3), got {tuple(x.shape)} {x.dtype}")
    param = next(vae.parameters())
    shift, scale = _latent_scale(vae)
    out = []
    for chunk in x.split(batch):
        pixels = chunk.permute(0, 3, 1, 2).to(param.device, param.dtype) / 127.5 - 1.0
        mean = vae.encode(pixels).latent_dist.mean
        out.append(((mean - shift) * scale).float().cpu())
    return torch.cat(out).permute(1, 0, 2, 3).contiguous()


@torch.no_grad()
def decode_latents(vae: AutoencoderKL, latents: torch.Tensor, batch: int = 16) -> np.ndarray:
    """Scaled latents (4, F, h, w) -> uint8 frames (F, 8h, 8w, 3)."""
    if latents.ndim != 4:
        raise ValueError(f"decode_latents: want latents (C, F, h, w), got {tuple(latents.shape)}")
    param = next(vae.parameters())
    shift, scale = _latent_scale(vae)
    out = []
    for chunk in latents.permute(1, 0, 2, 3).split(batch):
        pixels = vae.decode(chunk.to(param.device, param.dtype) / scale + shift).sample
        out.append(((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu())
    return torch.cat(out).numpy()


# -- HiFi-GAN vocoder -----------------------------------------------------------------------------
def tiny_vocoder(seed: int = 0) -> SpeechT5HifiGan:
    """SpeechT5's HiFi-GAN (80-bin mel in, 16 kHz, hop 4*4*4*4 = 256 as published) at tiny width, seeded."""
    config = SpeechT5HifiGanConfig(
        model_in_dim=MEL_BINS, sampling_rate=SAMPLE_RATE, upsample_initial_channel=32,
        upsample_rates=[4, 4, 4, 4], upsample_kernel_sizes=[8, 8, 8, 8],
        resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]], normalize_before=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vocoder = SpeechT5HifiGan(config)
    return vocoder.eval().requires_grad_(False)


def load_vocoder(path: str | Path, dtype: torch.dtype = torch.float32) -> SpeechT5HifiGan:
    """SpeechT5 HiFi-GAN from a local folder (microsoft/speecht5_hifigan: config.json + pytorch_model.bin
    or model.safetensors). Its ``mean``/``scale`` buffers, part of the checkpoint, normalise the mel."""
    p = require_weights(path, "HiFi-GAN vocoder (SpeechT5HifiGan)")
    if not (p / "config.json").exists():
        raise weights_error("HiFi-GAN vocoder (SpeechT5HifiGan)", p, "avgen.model.vocoder.path",
                            "is not a transformers folder", FileNotFoundError(f"{p / 'config.json'} missing"))
    vocoder = SpeechT5HifiGan.from_pretrained(p, local_files_only=True, dtype=dtype)
    if vocoder.config.model_in_dim != MEL_BINS or hop_length(vocoder) != HOP:
        raise weights_error("HiFi-GAN vocoder (SpeechT5HifiGan)", p, "avgen.model.vocoder.path", "does not fit the format",
                            ValueError(f"{vocoder.config.model_in_dim} mel bins, hop {hop_length(vocoder)}; "
                                       f"the model's mel has {MEL_BINS} bins, hop {HOP}"))
    return vocoder.eval().requires_grad_(False)


def hop_length(vocoder: SpeechT5HifiGan) -> int:
    """Waveform samples per mel frame (the product of the upsampling rates)."""
    return int(np.prod(vocoder.config.upsample_rates))


@torch.no_grad()
def vocode(vocoder: SpeechT5HifiGan, mel: torch.Tensor | np.ndarray) -> np.ndarray:
    """Log-mel (80, T) in the vocoder's convention (SpeechT5: log10 of an 80-bin mel, 1024 FFT, hop 256,
    80-7600 Hz) -> float32 waveform of T * hop samples at the vocoder's sampling rate."""
    m = torch.as_tensor(np.asarray(mel) if not isinstance(mel, torch.Tensor) else mel)
    if m.ndim != 2 or m.shape[0] != vocoder.config.model_in_dim:
        raise ValueError(f"vocode: want a mel ({vocoder.config.model_in_dim}, T), got {tuple(m.shape)}")
    param = next(vocoder.parameters())
    wave = vocoder(m.T.to(param.device, param.dtype))
    return wave.float().cpu().numpy().astype(np.float32)
