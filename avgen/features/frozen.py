"""The frozen video codec the features, the samplers and the evaluation share, chosen by params.

``features.vae.backend``: ``sd_vae`` loads an SD-VAE (``diffusers.AutoencoderKL``) from the local
directory ``features.vae.path``; ``stand_in`` builds the tiny seeded one of the sample
(``avgen.models.frozen.tiny_vae``: the real class at tiny width, random weights). The same params
give the same VAE in every process, so latents cached by the features stage decode with the VAE
that the evaluation and ``python -m avgen generate`` build again.
"""
from __future__ import annotations

from pathlib import Path

VAE_SEED = 0


def build_vae(features: dict, root: Path = Path(".")):
    from avgen.models.frozen import load_vae, tiny_vae

    cfg = features["vae"]
    if cfg["backend"] == "stand_in":
        return tiny_vae(seed=VAE_SEED)
    if cfg["backend"] == "sd_vae":
        return load_vae(Path(root) / cfg["path"])
    raise ValueError(f"params key 'features.vae.backend' must be stand_in or sd_vae, got {cfg['backend']!r}")


def build_vocoder(model: dict, root: Path = Path(".")):
    from avgen.models.frozen import load_vocoder, tiny_vocoder

    cfg = model["vocoder"]
    if cfg["backend"] == "stand_in":
        return tiny_vocoder(seed=VAE_SEED)
    if cfg["backend"] == "hifigan":
        return load_vocoder(Path(root) / cfg["path"])
    raise ValueError(f"params key 'model.vocoder.backend' must be stand_in or hifigan, got {cfg['backend']!r}")
