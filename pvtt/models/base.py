"""Start a PVTT DiT from a pretrained Wan DiT (Wan2.1 1.3B/14B, Wan2.2 5B) on local disk.

PVTT adds conditioning to a base Wan DiT: the source-video latents and the edit mask as extra
input channels of the patch embedding, and the reference image through Wan I2V's image
branch of the cross-attention. Every weight the base has is copied; every new weight that
could change the output starts at zero:

- the patch embedding's extra input channels (source, mask) are zero, so they add nothing;
- without an image branch in the base (a T2V checkpoint), the branch's value projection
  ``v_img`` is zero, so the image attention adds nothing to the cross-attention's output.

At step 0 the PVTT model's velocity is therefore the base model's, for any source, mask and
reference image (``tests/test_base_init.py`` checks it against DiffSynth's own Wan forward).
The checkpoint is read with DiffSynth's loader (safetensors or .pth, one file or shards) and,
when it is in diffusers' layout, renamed with DiffSynth's converter. Nothing is downloaded.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from genbuild.weights import require_weights
from pvtt.models.dit import PVTTDiT

log = logging.getLogger(__name__)

NEW_ZERO = ("cross_attn.v_img.weight", "cross_attn.v_img.bias")
# The rest of the image branch: random, but its output passes through the zero v_img.
GATED = ("img_emb.", "cross_attn.k_img.", "cross_attn.norm_k_img.")


def load_base_state(path: str | Path | list) -> dict[str, torch.Tensor]:
    """A Wan DiT state dict in DiffSynth's ``WanModel`` names, read from local file(s)."""
    from diffsynth.core.loader.file import load_state_dict

    paths = [path] if isinstance(path, (str, Path)) else list(path)
    files = []
    for p in paths:
        p = require_weights(p, "base Wan DiT")
        files += sorted(p.glob("*.safetensors")) if p.is_dir() else [p]
    if not files:
        raise FileNotFoundError(f"base Wan DiT: no .safetensors files in {paths}")
    state = load_state_dict([str(f) for f in files], torch_dtype=torch.float32)
    if any(k.startswith("condition_embedder.") for k in state):
        from diffsynth.utils.state_dict_converters.wan_video_dit import WanVideoDiTFromDiffusers

        state = WanVideoDiTFromDiffusers(state)
    return {k[len("model."):] if k.startswith("model.") else k: v for k, v in state.items()}


@torch.no_grad()
def init_from_base(dit: PVTTDiT, state: dict[str, torch.Tensor]) -> dict:
    """Copy the base weights into ``dit`` and zero the new conditioning; returns what was done."""
    if dit.prediction != "velocity":
        raise ValueError("model.base: a pretrained Wan DiT predicts velocity; set model.prediction: velocity")
    own = dit.wan.state_dict()
    copied, zeroed, kept = [], [], []
    for name, param in own.items():
        base = state.get(name)
        if name == "patch_embedding.weight":
            if base is None or base.shape[0] != param.shape[0] or base.shape[2:] != param.shape[2:]:
                raise ValueError(f"model.base: patch embedding {tuple(base.shape) if base is not None else None} "
                                 f"does not fit the preset's {tuple(param.shape)} (wrong preset or codec?)")
            c = dit.latent_channels
            if base.shape[1] < c:
                raise ValueError(f"model.base: the base takes {base.shape[1]} latent channels, the codec gives {c}")
            param.zero_()
            param[:, :c] = base[:, :c]  # the noisy latents; source and mask channels stay zero
            copied.append(name)
            zeroed.append(f"{name}[:, {c}:]")
        elif base is not None and base.shape == param.shape:
            param.copy_(base)
            copied.append(name)
        elif name.endswith(NEW_ZERO):
            param.zero_()
            zeroed.append(name)
        elif name.startswith(GATED) or any(f".{g}" in name for g in GATED):
            kept.append(name)  # new, or an I2V base's CLIP-width image branch beside a DINOv2 encoder
        elif base is not None:
            raise ValueError(f"model.base: '{name}' is {tuple(base.shape)} in the base, {tuple(param.shape)} here "
                             "(wrong preset?)")
        else:
            raise ValueError(f"model.base: the base checkpoint has no '{name}' (not a Wan DiT of this preset?)")
    unused = sorted(set(state) - set(own))
    log.info("base init: %d tensors copied, %d zeroed, %d new (gated), %d base tensors unused",
             len(copied), len(zeroed), len(kept), len(unused))
    return {"copied": len(copied), "zeroed": zeroed, "new": kept, "unused": unused}
