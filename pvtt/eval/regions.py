"""Scores by region: how an edit does inside the edit mask and what it does to the rest.

Whole-frame PSNR hides both failures that matter for template transfer: a model that leaves the
old product in place scores well (the mask is a small part of the frame), and a model that
smears the background loses little. So every model, and the unedited template beside them, is
scored inside the mask (did the product get replaced?) and outside it (was the rest kept?), and
by a reference similarity: the image encoder in use embeds the generated product region, cut
out by the mask and prepared exactly as the reference view is (``reference_to_tensor``), and
its first token (CLIP's class token; the stand-in's mean token) is compared by cosine with the
reference's. The encoder is the model's own (the tiny stand-in on the sample, CLIP ViT-H at
scale), so the score says how much the model's product looks like the reference *to that
encoder*; it is named ``ref_sim_<kind>`` so numbers from different encoders are never mixed.
"""
from __future__ import annotations

import numpy as np
import torch

from genbuild.metrics import classical as M
from pvtt.models.encoders import reference_to_tensor

REGION_KEYS = ("mask_psnr", "mask_ssim", "bg_psnr", "bg_ssim")


def region_scores(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM of (F, H, W, 3) uint8 ``pred`` against ``truth`` inside the (F, H, W) bool
    ``mask`` and outside it (background). A region with no pixel scores NaN."""
    inside = np.asarray(mask, bool)
    return {"mask_psnr": M.psnr(pred, truth, inside), "mask_ssim": M.ssim(pred, truth, inside),
            "bg_psnr": M.psnr(pred, truth, ~inside), "bg_ssim": M.ssim(pred, truth, ~inside)}


def cells_on_frames(cells: torch.Tensor, frame_shape: tuple[int, int, int]) -> list[np.ndarray]:
    """Per clip, the (F, H, W) bool pixel mask of latent edit cells ``cells`` (B, 1, F', H', W')
    at the decoded frames' size (nearest): the mask where only latents are at hand."""
    up = torch.nn.functional.interpolate(cells.float(), size=tuple(frame_shape), mode="nearest")
    return [m[0].numpy() > 0 for m in up]


def clip_scores(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Every weight-free score of one clip: whole-frame and per-region fidelity, temporal
    consistency (what the evaluation and the distillation gates compare)."""
    return {"psnr": M.psnr(pred, truth), "ssim": M.ssim(pred, truth), **region_scores(pred, truth, mask),
            "temporal_consistency": M.temporal_consistency(pred)}


def region_cutouts(frames: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    """Per frame with a non-empty mask: the mask's bounding box as RGBA, alpha = the mask."""
    cuts = []
    for frame, m in zip(np.asarray(frames), np.asarray(mask, bool)):
        ys, xs = np.nonzero(m)
        if len(ys) == 0:
            continue
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        alpha = (m[y0:y1, x0:x1, None] * 255).astype(np.uint8)
        cuts.append(np.concatenate([frame[y0:y1, x0:x1], alpha], axis=-1))
    return cuts


class ReferenceSimilarity:
    """Cosine between the image encoder's first token of the generated product region and of the
    reference view, averaged over the frames whose mask is not empty."""

    def __init__(self, image_encoder, size: int, kind: str):
        self.encoder, self.size, self.name = image_encoder, int(size), f"ref_sim_{kind}"

    @torch.no_grad()
    def _embed(self, images: list[np.ndarray]) -> torch.Tensor:
        batch = torch.stack([reference_to_tensor(im, self.size) for im in images])
        return torch.nn.functional.normalize(self.encoder(batch)[:, 0].float(), dim=-1)

    def __call__(self, frames: np.ndarray, mask: np.ndarray, reference_rgba: np.ndarray) -> float:
        return self.from_tokens(frames, mask, self.encoder(reference_to_tensor(reference_rgba, self.size)[None])[0])

    @torch.no_grad()
    def from_tokens(self, frames: np.ndarray, mask: np.ndarray, reference_tokens: torch.Tensor) -> float:
        """The same, against the reference's tokens as the latent cache holds them."""
        cuts = region_cutouts(frames, mask)
        if not cuts:
            return float("nan")
        ref = torch.nn.functional.normalize(reference_tokens[0].float(), dim=-1)
        return float((self._embed(cuts) @ ref).mean())
