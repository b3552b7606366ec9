"""What AVGen-DiT is conditioned on, as the training kit's ``Conditioning`` protocol wants it.

The kit's flow matching (``genbuild.train.flow``) noises, interpolates and integrates ONE
tensor per sample. AVGen's target is two (video latents and a mel), so a sample's target is
their flat concatenation ``[video latents (4*F*h*w) | mel (80*T)]`` (only the modalities the
batch has: stage 1 trains video-only and audio-only batches), and this class knows how to cut
it back: ``denoise`` unpacks the noisy flat tensor, calls the network with both modalities,
and packs the two velocities into the same layout. Noise, sigma and the velocity target then
apply elementwise to both modalities at once, which is exactly joint flow matching with one
noise level per sample. The text (CLIP + CLAP embeddings) is what classifier-free guidance drops.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

MODALITIES = ("joint", "video", "audio")


def pack(video: torch.Tensor | None, audio: torch.Tensor | None) -> torch.Tensor:
    """(B, 4, F, h, w) latents and/or (B, 80, T) mel -> the flat joint target (B, N), video first."""
    parts = [m.flatten(1) for m in (video, audio) if m is not None]
    if not parts:
        raise ValueError("pack: give video latents, a mel or both")
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


def unpack(flat: torch.Tensor, cond: AVConditions) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The inverse of ``pack`` for the modalities and shapes ``cond`` names."""
    b = flat.shape[0]
    nv = math.prod(cond.video_shape) if cond.has_video else 0
    na = math.prod(cond.audio_shape) if cond.has_audio else 0
    if flat.shape[1] != nv + na:
        raise ValueError(f"unpack: {flat.shape[1]} values per sample, but a '{cond.modality}' sample of video "
                         f"{tuple(cond.video_shape)} and mel {tuple(cond.audio_shape)} has {nv + na}")
    video = flat[:, :nv].reshape(b, *cond.video_shape) if cond.has_video else None
    audio = flat[:, nv:].reshape(b, *cond.audio_shape) if cond.has_audio else None
    return video, audio


@dataclass
class AVConditions:
    """A batch's text condition, plus which modalities its flat target holds and their shapes."""

    clip_text: torch.Tensor                 # (B, Dc) CLIP text embedding
    clap_text: torch.Tensor                 # (B, Da) CLAP text embedding
    modality: str = "joint"                 # joint | video | audio: what the flat target holds
    video_shape: tuple[int, ...] = (4, 1, 1, 1)   # (4, F, h, w) per sample
    audio_shape: tuple[int, ...] = (80, 1)        # (80, T) per sample

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise ValueError(f"AVConditions.modality: unknown '{self.modality}' (known: {', '.join(MODALITIES)})")
        self.video_shape, self.audio_shape = tuple(self.video_shape), tuple(self.audio_shape)

    @classmethod
    def for_targets(cls, clip_text: torch.Tensor, clap_text: torch.Tensor, video: torch.Tensor | None = None,
                    audio: torch.Tensor | None = None) -> AVConditions:
        """The conditions for a batch of (B, 4, F, h, w) latents and/or (B, 80, T) mel: modality and shapes from them."""
        if video is None and audio is None:
            raise ValueError("AVConditions.for_targets: give video latents, a mel or both")
        modality = "joint" if video is not None and audio is not None else ("video" if video is not None else "audio")
        return cls(clip_text, clap_text, modality,
                   tuple(video.shape[1:]) if video is not None else (4, 1, 1, 1),
                   tuple(audio.shape[1:]) if audio is not None else (80, 1))

    @property
    def has_video(self) -> bool:
        return self.modality in ("joint", "video")

    @property
    def has_audio(self) -> bool:
        return self.modality in ("joint", "audio")

    @property
    def numel(self) -> int:
        """Values per sample of the flat target."""
        return (math.prod(self.video_shape) if self.has_video else 0) + (math.prod(self.audio_shape) if self.has_audio else 0)

    def null(self) -> AVConditions:
        """The unconditional branch for CFG: both text embeddings zero (the backbone keeps zeros at zero)."""
        return replace(self, clip_text=torch.zeros_like(self.clip_text), clap_text=torch.zeros_like(self.clap_text))

    def to(self, device) -> AVConditions:
        return replace(self, clip_text=self.clip_text.to(device), clap_text=self.clap_text.to(device))

    def select(self, idx) -> AVConditions:
        return replace(self, clip_text=self.clip_text[idx], clap_text=self.clap_text[idx])

    def drop(self, keep: torch.Tensor) -> AVConditions:
        """Zero both text embeddings where ``keep`` (B,) is False (CFG dropout in training)."""
        k = keep.view(-1, 1).to(self.clip_text.device)
        return replace(self, clip_text=self.clip_text * k.to(self.clip_text.dtype),
                       clap_text=self.clap_text * k.to(self.clap_text.dtype))

    def denoise(self, model, x: torch.Tensor, t: torch.Tensor, interval: torch.Tensor | None = None) -> torch.Tensor:
        """``model`` (``AVGenNetwork``) on the flat noisy target ``x`` (B, N) -> the flat velocity, in ``x``'s dtype.
        The AVGen network has no interval input (no average-velocity training here yet)."""
        if interval is not None:
            raise ValueError("AVGenNetwork predicts the instantaneous velocity; it takes no interval")
        video, audio = unpack(x, self)
        v, a = model(video, audio, t, self.clip_text, self.clap_text)
        return pack(v, a).to(x.dtype)
