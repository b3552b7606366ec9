"""AVGen-DiT: the four trainable modules wired into one velocity predictor.

backbone (joint tokens) -> alignment (cross-modal exchange, temporal conv) -> a decoder per
modality (mel velocity, latent velocity). Each module is a Diffusers model with its own config,
saved in its own folder (``dir/backbone``, ``dir/alignment``, ...: config.json +
diffusion_pytorch_model.safetensors), so a stage can freeze, swap or shard them separately and
any Diffusers tool reads them. The network itself is a plain ``nn.Module``: the kit's trainer,
EMA and checkpointing see one module, and ``genbuild.train.flow`` sees ``prediction``.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from avgen.models.alignment import TemporalAlignment
from avgen.models.audio_decoder import AudioDecoder
from avgen.models.backbone import UnifiedDiT
from avgen.models.video_decoder import VideoDecoder
from genbuild.weights import require_weights

MODULES: dict[str, type] = {
    "backbone": UnifiedDiT, "alignment": TemporalAlignment, "audio_decoder": AudioDecoder, "video_decoder": VideoDecoder,
}


# The dimensions each module shares with the backbone.
SHARED = {"alignment": ("hidden",), "audio_decoder": ("hidden", "mel_bins", "audio_patch"),
          "video_decoder": ("hidden", "latent_channels", "patch_size")}


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def check_compatible(config: dict[str, dict]) -> None:
    """The modules' shared dimensions must agree (a preset typo would otherwise fail deep in a matmul)."""
    backbone = config["backbone"]
    for module, keys in SHARED.items():
        for key in keys:
            want, have = backbone.get(key), config[module].get(key)
            if want is not None and have is not None and _as_list(have) != _as_list(want):
                raise ValueError(f"{module}.{key} = {have} does not match the backbone's {key} = {want}")


class AVGenNetwork(nn.Module):
    """``forward(video, audio, t, clip_text, clap_text) -> (video velocity | None, mel velocity | None)``."""

    prediction = "velocity"

    def __init__(self, backbone: UnifiedDiT, alignment: TemporalAlignment, audio_decoder: AudioDecoder,
                 video_decoder: VideoDecoder):
        super().__init__()
        self.backbone, self.alignment = backbone, alignment
        self.audio_decoder, self.video_decoder = audio_decoder, video_decoder
        check_compatible(self.config)

    @classmethod
    def from_config(cls, config: dict[str, dict]) -> AVGenNetwork:
        """Build from one config dict per module (``avgen.models.presets.PRESETS[...]``); unknown keys fail."""
        missing = sorted(set(MODULES) - set(config))
        if missing:
            raise ValueError(f"network config: missing module(s) {', '.join(missing)}")
        check_compatible(config)
        return cls(**{name: MODULES[name](**dict(config[name])) for name in MODULES})

    @property
    def config(self) -> dict[str, dict]:
        """Each module's Diffusers config (what ``save_pretrained`` writes), without the private keys."""
        return {name: {k: v for k, v in getattr(self, name).config.items() if not k.startswith("_")} for name in MODULES}

    def forward(self, video: torch.Tensor | None, audio: torch.Tensor | None, t: torch.Tensor, clip_text: torch.Tensor,
                clap_text: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``video`` (B, 4, F, h, w) noisy latents, ``audio`` (B, 80, T) noisy mel (either may be None), ``t`` (B,)
        in 0..1000 (1000 * sigma), the text embeddings (B, D) -> the velocities, each in its input's shape and dtype."""
        tokens = self.backbone(video, audio, t, clip_text, clap_text)
        v_tok, a_tok = self.alignment(tokens.video, tokens.audio, tokens.video_grid)
        v = a = None
        if video is not None:
            v = self.video_decoder(v_tok, tokens.cond, tokens.video_grid, tokens.video_size).to(video.dtype)
        if audio is not None:
            a = self.audio_decoder(a_tok, tokens.cond, tokens.audio_frames).to(audio.dtype)
        return v, a

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the backbone blocks, decoder layers and conv layers in backward (memory for compute)."""
        for name in ("backbone", "audio_decoder", "video_decoder"):
            getattr(self, name).enable_gradient_checkpointing()

    # -- persistence ----------------------------------------------------------------------------
    def save_pretrained(self, out_dir: str | Path) -> None:
        """One Diffusers folder per module (config.json + diffusion_pytorch_model.safetensors)."""
        out = Path(out_dir)
        for name in MODULES:
            getattr(self, name).save_pretrained(out / name, safe_serialization=True)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, torch_dtype: torch.dtype | None = None) -> AVGenNetwork:
        """Load what ``save_pretrained`` wrote; a missing folder names its path."""
        root = require_weights(model_dir, "AVGen-DiT network")
        modules = {}
        for name, klass in MODULES.items():
            sub = require_weights(root / name, f"AVGen-DiT {name}")
            modules[name] = klass.from_pretrained(sub, local_files_only=True, torch_dtype=torch_dtype)
        return cls(**modules)
