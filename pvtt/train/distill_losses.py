"""PVTT's terms of the DMD2 generator loss (``distill.common.losses``), on the student's x0.

DMD2's distribution matching makes the student's samples look like the teacher's; the seed's
Task 3 also asks them to be right where this task has a right answer. Each term has its weight
in params (0 = off) and is built here from the model's own codec and image encoder:

- ``regression``: against the ground-truth edit, in pixel space (decoded frames; MSE, plus
  LPIPS when ``lpips`` names its weights) where the codec decodes with gradients (the sample's
  space-to-depth codec), in latent space (MSE) otherwise (a VAE decoded without gradients);
- ``temporal``: temporal consistency of the generated clip: each frame against the next one
  warped back by the optical flow between them (OpenCV Farneback on the detached frames, the
  warp differentiable), mean absolute difference;
- ``background``: outside the edit mask the student must give the source back (latent MSE
  against the source latents there);
- ``identity``: the generated product region, cut out by the mask and prepared as the
  reference view is, embedded by the image encoder; 1 - cosine to the reference's tokens.

The adversarial term is the kit's (``genbuild.train.methods.adversarial``); ``adversarial`` here
builds it for the PVTT DiT (the head on a Wan block's tokens).
"""
from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from genbuild.train.methods.adversarial import Adversarial
from genbuild.train.methods.student import GeneratorTerm
from pvtt.models.codec import SpaceToDepthCodec
from pvtt.models.conditions import Conditions

TERMS = ("temporal", "background", "identity")


def decodes_with_grad(codec) -> bool:
    """Whether gradients flow through ``codec.decode`` (the exact reshaping codec; the VAEs decode
    under no_grad, and a 14B run's memory could not hold a video VAE's decode graph anyway)."""
    return isinstance(codec, SpaceToDepthCodec)


def latent_mse(x0_gen: torch.Tensor, x0_true: torch.Tensor, cond: Conditions) -> torch.Tensor:
    return F.mse_loss(x0_gen, x0_true)


def pixel_regression(codec, lpips: Callable | None = None) -> Callable:
    """MSE of the decoded clips, plus LPIPS (frames as a batch of images) when given."""
    def loss(x0_gen: torch.Tensor, x0_true: torch.Tensor, cond: Conditions) -> torch.Tensor:
        gen, true = codec.decode(x0_gen), codec.decode(x0_true)
        out = F.mse_loss(gen, true)
        if lpips is not None:
            flat = lambda v: v.transpose(1, 2).flatten(0, 1)  # noqa: E731  (B, 3, F, H, W) -> (B*F, 3, H, W)
            out = out + lpips(flat(gen), flat(true)).mean()
        return out
    return loss


def background_loss(x0_gen: torch.Tensor, x0_true: torch.Tensor, cond: Conditions) -> torch.Tensor:
    keep = (1 - cond.edit_cells()).expand_as(x0_gen)
    return ((x0_gen - cond.source) ** 2 * keep).sum() / keep.sum().clamp_min(1.0)


def _flow_grid(prev: np.ndarray, nxt: np.ndarray) -> torch.Tensor:
    """grid_sample grid (H, W, 2) that samples ``nxt`` where each pixel of ``prev`` moved to."""
    g0, g1 = (cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in (prev, nxt))
    flow = cv2.calcOpticalFlowFarneback(g0, g1, None, 0.5, 3, 9, 3, 5, 1.1, 0)
    h, w = g0.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    gx = (xs + flow[..., 0]) / max(w - 1, 1) * 2 - 1
    gy = (ys + flow[..., 1]) / max(h - 1, 1) * 2 - 1
    return torch.from_numpy(np.stack([gx, gy], -1))


def temporal_loss(codec) -> Callable:
    def loss(x0_gen: torch.Tensor, x0_true: torch.Tensor, cond: Conditions) -> torch.Tensor:
        frames = codec.decode(x0_gen)                               # (B, 3, F, H, W) in [-1, 1]
        if frames.shape[2] < 2:
            return frames.sum() * 0
        u8 = ((frames.detach().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 4, 1).cpu().numpy()
        diffs = []
        for b in range(frames.shape[0]):
            for t in range(frames.shape[2] - 1):
                grid = _flow_grid(u8[b, t], u8[b, t + 1]).to(frames.device, frames.dtype)[None]
                warped = F.grid_sample(frames[b:b + 1, :, t + 1], grid, mode="bilinear", padding_mode="border",
                                       align_corners=True)
                diffs.append((frames[b:b + 1, :, t] - warped).abs().mean())
        return torch.stack(diffs).mean()
    return loss


def _region_views(frames: torch.Tensor, mask: torch.Tensor, size: int) -> torch.Tensor:
    """(B*F', 3, size, size): each frame's mask bounding box, the rest of the box mid grey,
    letterboxed on grey and resized, as ``reference_to_tensor`` prepares the reference."""
    views = []
    for b in range(frames.shape[0]):
        for t in range(frames.shape[2]):
            m = mask[b, 0, t]
            ys, xs = torch.nonzero(m > 0, as_tuple=True)
            if len(ys) == 0:
                continue
            y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
            crop = frames[b, :, t, y0:y1, x0:x1] * m[y0:y1, x0:x1]   # grey (0) outside the mask
            side = max(y1 - y0, x1 - x0)
            top, left = (side - (y1 - y0)) // 2, (side - (x1 - x0)) // 2
            crop = F.pad(crop, (left, side - (x1 - x0) - left, top, side - (y1 - y0) - top))
            views.append(F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False)[0])
    return torch.stack(views) if views else frames.new_zeros(0, 3, size, size)


def identity_loss(codec, image_encoder, size: int) -> Callable:
    def loss(x0_gen: torch.Tensor, x0_true: torch.Tensor, cond: Conditions) -> torch.Tensor:
        frames = codec.decode(x0_gen)
        mask = F.interpolate(cond.edit_cells(), size=frames.shape[2:], mode="nearest")
        counts = [int((mask[b, 0].flatten(1).amax(1) > 0).sum()) for b in range(len(mask))]
        views = _region_views(frames, mask, size)
        if len(views) == 0:
            return frames.sum() * 0
        emb = F.normalize(image_encoder(views)[:, 0].float(), dim=-1)
        ref = F.normalize(cond.image_tokens[:, 0].float(), dim=-1).repeat_interleave(torch.tensor(counts), dim=0)
        return 1 - (emb * ref.to(emb.device)).sum(-1).mean()
    return loss


def build_terms(losses: dict, bundle, reference_size: int, lpips: Callable | None = None) -> tuple[dict, Callable]:
    """(extra DMD2 terms by name, regression function) from ``distill.common.losses``."""
    codec = bundle.codec
    pixel = decodes_with_grad(codec)
    need_pixels = [name for name in ("temporal", "identity") if float((losses.get(name) or {}).get("weight", 0)) > 0]
    if need_pixels and not pixel:
        raise ValueError(f"distill.common.losses.{need_pixels[0]}.weight > 0 needs a codec that decodes with "
                         f"gradients; codec '{bundle.components['codec'].get('kind')}' does not (set the weight to 0)")
    makers = {"temporal": lambda: temporal_loss(codec), "background": lambda: background_loss,
              "identity": lambda: identity_loss(codec, bundle.image_encoder, reference_size)}
    terms = {name: GeneratorTerm(float((losses.get(name) or {}).get("weight", 0.0)), makers[name]())
             for name in TERMS if float((losses.get(name) or {}).get("weight", 0.0)) > 0}
    regression = pixel_regression(codec, lpips) if pixel else latent_mse
    return terms, regression


def adversarial(cfg: dict | None, dit, seed: int) -> Adversarial | None:
    """The GAN term on the fake score's block ``cfg['block']`` (negative: from the end)."""
    cfg = cfg or {}
    if float(cfg.get("weight", 0.0)) <= 0:
        return None
    block = int(cfg.get("block", -1))
    pt, ph, pw = dit.arch["patch_size"]

    def to_grid(tokens: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        b, _, f, h, w = x.shape
        return tokens.transpose(1, 2).reshape(b, tokens.shape[-1], f // pt, h // ph, w // pw)
    return Adversarial(float(cfg["weight"]), lambda fake: fake.wan.blocks[block], to_grid, int(dit.arch["dim"]),
                       critic_weight=float(cfg.get("critic_weight", 1.0)), seed=seed)
