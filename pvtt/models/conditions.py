"""What the PVTT DiT is conditioned on, as the training kit's ``Conditioning`` protocol wants it.

The flow-matching math, the samplers and the training methods live in the kit
(``genbuild.train.flow``, ``genbuild.train.methods``) and know nothing of these four fields: they
batch, move, drop and call through the protocol (``genbuild.train.conditioning``). This class is
PVTT's answer: the source video and edit mask always condition the model (they define the task);
the reference image and caption are what classifier-free guidance drops.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genbuild.train.flow import KeepRegion


@dataclass
class Conditions:
    """Everything the denoiser is conditioned on, batched."""

    source: torch.Tensor        # (B, C, F, H, W) source-video latents
    mask: torch.Tensor          # (B, 1, F, H, W) edit region on the latent grid
    image_tokens: torch.Tensor  # (B, 257, 1280) reference product image
    text_tokens: torch.Tensor   # (B, L, D) caption

    def null(self) -> Conditions:
        """The unconditional branch for CFG: no reference image, no caption (video and mask stay)."""
        return Conditions(self.source, self.mask, torch.zeros_like(self.image_tokens), torch.zeros_like(self.text_tokens))

    def to(self, device) -> Conditions:
        return Conditions(*(t.to(device) for t in (self.source, self.mask, self.image_tokens, self.text_tokens)))

    def select(self, idx) -> Conditions:
        return Conditions(self.source[idx], self.mask[idx], self.image_tokens[idx], self.text_tokens[idx])

    def drop(self, keep: torch.Tensor) -> Conditions:
        """Zero image and text conditions where ``keep`` (B,) is False (CFG dropout in training)."""
        k3 = keep.view(-1, 1, 1).to(self.image_tokens.dtype)
        return Conditions(self.source, self.mask, self.image_tokens * k3, self.text_tokens * k3)

    def edit_cells(self) -> torch.Tensor:
        """(B, 1, F, H, W) latent cells with any edit (1) and without (0), in the source's dtype."""
        return (self.mask.amax(1, keepdim=True) > 0).to(self.source.dtype)

    def region_weights(self, inside: float) -> torch.Tensor:
        """(B, 1, F, H, W) loss weights: ``inside`` in the edit mask (a cell's covered fraction
        interpolates), 1 elsewhere (``teacher.mask_loss_weight``). Why below 1: at high noise the
        new product's look is uncertain and its large, irreducible error would dominate the
        gradient, leaving the background, which must come out exact, too small a share."""
        m = self.mask.amax(1, keepdim=True)
        return 1 + (inside - 1) * m

    def keep_background(self, dilate: int) -> KeepRegion:
        """The source latents kept outside the edit mask grown by ``dilate`` latent cells
        (``inference.keep_background``): the background is the template's by construction."""
        edit = self.edit_cells()
        if dilate > 0:
            edit = F.max_pool3d(edit, (1, 2 * dilate + 1, 2 * dilate + 1), stride=1, padding=(0, dilate, dilate))
        return KeepRegion(self.source, 1 - edit)

    def denoise(self, model, x: torch.Tensor, t: torch.Tensor, interval: torch.Tensor | None = None) -> torch.Tensor:
        """The PVTT DiT's call (``PVTTDiT.forward`` and the ONNX denoiser take the fields in this order)."""
        if interval is None:
            return model(x, t, self.source, self.mask, self.image_tokens, self.text_tokens)
        return model(x, t, self.source, self.mask, self.image_tokens, self.text_tokens, interval)
