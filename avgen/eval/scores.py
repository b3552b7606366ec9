"""CLIP and CLAP scores of generated clips against their captions, for the eval report.

``clip_score``: per clip, the cosine between the mean of its L2-normalised frame embeddings and its
caption's embedding, averaged over clips; ``clap_score`` likewise with the audio embedding of each
clip. Plain cosines in [-1, 1] (no x100, no clamp at 0 as in Hessel et al.'s CLIPScore), which is
the scale of the plan's targets (CLIP > 0.28, CLAP > 0.30).

Both return ``{"value", "implementation", "available", "reason"}``. With a stand-in encoder (the
sample's frozen random projections) the score is *unavailable* -- value None, and the reason says
so -- unless the caller passes ``allow_stand_in=True``, because a number from random projections
printed under "CLIP" would read as the metric. A caller that does allow it gets an implementation
string that says "stand-in" first.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from avgen.features.encoders import ClapEncoder, ClipEncoder


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _result(value: float | None, implementation: str, reason: str | None = None) -> dict:
    return {"value": value, "implementation": implementation, "available": value is not None, "reason": reason}


def _gate(encoder, metric: str, allow_stand_in: bool, n_items: int, n_captions: int) -> dict | None:
    """The unavailable result when the score must not be computed; None when it may be."""
    if n_items != n_captions:
        raise ValueError(f"{metric}: {n_items} clips but {n_captions} captions")
    if n_items == 0:
        return _result(None, encoder.implementation, f"{metric}: no clips to score")
    if encoder.stand_in and not allow_stand_in:
        return _result(None, encoder.implementation,
                       f"{metric}: the encoder is a stand-in ({encoder.implementation}); its cosine is not the metric")
    return None


def _describe(encoder, what: str, n: int) -> str:
    head = "STAND-IN, not the metric: " if encoder.stand_in else ""
    return f"{head}{encoder.implementation}; {what}, mean over {n} clips, plain cosine (no x100, no clamp)"


def clip_score(encoder: ClipEncoder, frames_list: Sequence[np.ndarray], captions: Sequence[str], *,
               allow_stand_in: bool = False) -> dict:
    """Mean over clips of cos(mean frame embedding, caption embedding); frames uint8 (F, H, W, 3)."""
    gate = _gate(encoder, "clip_score", allow_stand_in, len(frames_list), len(captions))
    if gate is not None:
        return gate
    text = _unit(encoder.text(list(captions)))
    video = _unit(np.stack([_unit(encoder.image(f)).mean(axis=0) for f in frames_list]))
    value = float((video * text).sum(axis=1).mean())
    return _result(value, _describe(encoder, "cosine of the clip's mean frame embedding and the caption's", len(captions)))


def clap_score(encoder: ClapEncoder, wavs: Sequence[np.ndarray], sr: int, captions: Sequence[str], *,
               allow_stand_in: bool = False) -> dict:
    """Mean over clips of cos(audio embedding, caption embedding); audio float at ``sr`` Hz."""
    gate = _gate(encoder, "clap_score", allow_stand_in, len(wavs), len(captions))
    if gate is not None:
        return gate
    audio, text = _unit(encoder.audio(list(wavs), sr)), _unit(encoder.text(list(captions)))
    value = float((audio * text).sum(axis=1).mean())
    return _result(value, _describe(encoder, "cosine of the clip's audio embedding and the caption's", len(captions)))
