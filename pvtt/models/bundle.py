"""A model bundle: the denoiser plus the codec and frozen encoders it was trained with.

The encoders' settings are stored in every checkpoint's config.json (``components``), so students,
the engine and the evaluation rebuild exactly the conditioning the teacher saw, on the device and
in the dtype it names (``model.device`` / ``model.dtype``, ``pvtt.models.components``).

Real encoders are loaded when first used, not when the bundle is made: a teacher that trains on the
latent cache never touches umT5-XXL or CLIP, so its ranks do not load them. Their files are
checked at once, so a missing one still stops at start-up, naming the path. Stand-ins are built
at once, in the order the sample's artifacts were made with (they draw from the global RNG).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from pvtt.models.codec import Codec, build_codec, codec_channels
from pvtt.models.components import DEFAULT_DEVICE, DEFAULT_DTYPE, DEFAULTS, KINDS, component_cfg, placement_names, resolve_placement
from pvtt.models.dit import PRESETS, PVTTDiT, build_dit, read_config
from pvtt.models.encoders import build_image_encoder, build_text_encoder, check_files, image_token_dim


class _Later:
    """A component built on first use."""

    def __init__(self, build):
        self.build = build


class Bundle:
    """The DiT (None in an encoders-only bundle: the latent cache) with its codec and frozen encoders."""

    def __init__(self, dit: PVTTDiT | None, codec: Codec, image_encoder: nn.Module | _Later, text_encoder: nn.Module | _Later,
                 components: dict):
        self.dit, self.components = dit, components  # components: {"codec": {...}, ..., "preset", "device", "dtype"}
        self._parts: dict[str, Any] = {"codec": codec, "image_encoder": image_encoder, "text_encoder": text_encoder}

    def _part(self, name: str):
        part = self._parts[name]
        if isinstance(part, _Later):
            part = self._parts[name] = part.build()
        return part

    @property
    def codec(self) -> Codec:
        return self._part("codec")

    @torch.no_grad()
    def encode_source(self, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Source-video latents as the DiT is conditioned on them (``model.source_input``).

        ``masked``: the edit region (``mask`` (B, 1, F, H, W), 1 = edit) is blanked to mid grey
        in pixel space before encoding, as Wan VACE's "inactive" video and inpainting models
        give it; the latents outside the mask are the source's (exactly, for the space-to-depth
        codec). Why: shown the old product, the tiny sample teacher learnt to recolour it instead
        of replacing it (in-mask PSNR stayed at the template's on unseen templates); blanked,
        it paints background and new product from the context and the reference (README
        "Teacher: what makes it learn the edit")."""
        if self.components.get("source_input", "full") == "masked":
            source = source * (1 - mask.to(source.dtype))
        return self.codec.encode(source)

    @property
    def image_encoder(self) -> nn.Module:
        return self._part("image_encoder")

    @property
    def text_encoder(self) -> nn.Module:
        return self._part("text_encoder")


SOURCE_INPUTS = ("full", "masked")


def components_from_params(model_params: dict, train_data: dict) -> dict:
    source_input = model_params.get("source_input", "full")
    if source_input not in SOURCE_INPUTS:
        raise ValueError(f"model.source_input: unknown '{source_input}' (known: {', '.join(SOURCE_INPUTS)})")
    return {
        "preset": model_params.get("preset", "tiny"),
        "prediction": model_params.get("prediction", "velocity"),
        "source_input": source_input,
        "device": str(model_params.get("device", DEFAULT_DEVICE)),
        "dtype": str(model_params.get("dtype", DEFAULT_DTYPE)),
        "codec": component_cfg(model_params, "codec"),
        "image_encoder": {"size": int(train_data["reference_size"]), **component_cfg(model_params, "image_encoder")},
        "text_encoder": component_cfg(model_params, "text_encoder"),
    }


def _placement(components: dict, name: str):
    return resolve_placement(*placement_names(components, name))


def _codec(components: dict) -> Codec:
    return build_codec(components["codec"], *_placement(components, "codec"))


def _encoders(components: dict, text_dim: int):
    """(image encoder, text encoder): stand-ins now, real ones on first use (their files checked now)."""
    img_cfg, txt_cfg = components["image_encoder"], components["text_encoder"]
    img_place, txt_place = _placement(components, "image_encoder"), _placement(components, "text_encoder")
    parts = []
    for name, cfg, build in (("image_encoder", img_cfg, lambda: build_image_encoder(img_cfg, *img_place)),
                             ("text_encoder", txt_cfg, lambda: build_text_encoder(txt_cfg, text_dim, *txt_place))):
        kind = cfg.get("kind", DEFAULTS[name]["kind"])
        if kind in KINDS[name] and KINDS[name][kind] is None:  # real: loads weights
            check_files(name, cfg)
            parts.append(_Later(build))
        else:
            parts.append(build())
    return tuple(parts)


def _check_preset(components: dict) -> None:
    if components["preset"] not in PRESETS:
        raise ValueError(f"model.preset: unknown preset '{components['preset']}' (known: {', '.join(PRESETS)})")


def encoders_for(components: dict) -> Bundle:
    """The codec and frozen encoders alone, without building the denoiser (a 14B one is costly)."""
    _check_preset(components)
    codec = _codec(components)
    img, txt = _encoders(components, PRESETS[components["preset"]]["text_dim"])
    return Bundle(None, codec, img, txt, components)


def new_bundle(components: dict, seed: int) -> Bundle:
    codec = _codec(components)
    dit = build_dit(components["preset"], codec_channels(components["codec"]), seed, components.get("prediction", "velocity"),
                    image_token_dim(components["image_encoder"]))
    img, txt = _encoders(components, dit.arch["text_dim"])
    return Bundle(dit, codec, img, txt, components)


def load_bundle(model_dir: str | Path, device: str | None = None, dtype: str | None = None) -> Bundle:
    """A trained model with the components of its config.json; ``device`` / ``dtype`` (params names)
    override the placement it was trained with (for example a CUDA-trained teacher on a CPU host)."""
    cfg = read_config(model_dir)
    components = dict(cfg["components"])
    place = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
    if place:
        components = {**components, **place, **{n: {k: v for k, v in components[n].items() if k not in place}
                                                  for n in ("codec", "image_encoder", "text_encoder")}}
    dit = PVTTDiT.load(model_dir)
    codec = _codec(components)
    img, txt = _encoders(components, dit.arch["text_dim"])
    return Bundle(dit, codec, img, txt, {**cfg["components"]})
