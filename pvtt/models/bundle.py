"""A model bundle: the denoiser plus the codec and frozen encoders it was trained with.

The encoders' settings are stored in every checkpoint's config.json, so students, the
engine and the evaluation rebuild exactly the conditioning the teacher saw.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from pvtt.models.codec import Codec, build_codec
from pvtt.models.dit import PRESETS, PVTTDiT, build_dit, read_config
from pvtt.models.encoders import build_image_encoder, build_text_encoder, image_token_dim


@dataclass
class Bundle:
    dit: PVTTDiT | None  # None in an encoders-only bundle (the latent cache)
    codec: Codec
    image_encoder: nn.Module
    text_encoder: nn.Module
    components: dict  # {"codec": {...}, "image_encoder": {...}, "text_encoder": {...}, "preset": str}


def components_from_params(model_params: dict, train_data: dict) -> dict:
    return {
        "preset": model_params.get("preset", "tiny"),
        "prediction": model_params.get("prediction", "velocity"),
        "codec": dict(model_params.get("codec", {"kind": "space_to_depth", "factor": 4})),
        "image_encoder": {"size": int(train_data["reference_size"]), **model_params.get("image_encoder", {"kind": "tiny", "seed": 0})},
        "text_encoder": dict(model_params.get("text_encoder", {"kind": "hashed", "max_len": 16})),
    }


def _encoders(components: dict, text_dim: int):
    codec = build_codec(components["codec"])
    return codec, build_image_encoder(components["image_encoder"]), build_text_encoder(components["text_encoder"], text_dim)


def encoders_for(components: dict) -> Bundle:
    """The codec and frozen encoders alone, without building the denoiser (a 14B one is costly)."""
    preset = components["preset"]
    if preset not in PRESETS:
        raise ValueError(f"model.preset: unknown preset '{preset}' (known: {', '.join(PRESETS)})")
    codec, img, txt = _encoders(components, PRESETS[preset]["text_dim"])
    return Bundle(None, codec, img, txt, components)


def new_bundle(components: dict, seed: int) -> Bundle:
    codec = build_codec(components["codec"])
    dit = build_dit(components["preset"], codec.channels, seed, components.get("prediction", "velocity"),
                    image_token_dim(components["image_encoder"]))
    _, img, txt = _encoders(components, dit.arch["text_dim"])
    return Bundle(dit, codec, img, txt, components)


def load_bundle(model_dir: str | Path) -> Bundle:
    cfg = read_config(model_dir)
    components = cfg["components"]
    dit = PVTTDiT.load(model_dir)
    codec, img, txt = _encoders(components, dit.arch["text_dim"])
    return Bundle(dit, codec, img, txt, components)
