"""Evaluation during training: how a checkpoint edits, not only how its loss moves.

Every ``teacher.eval_every`` steps (and at the end) the trainer scores the model on the first
``eval_items`` val triplets of the latent cache: the flow-matching loss at fixed noise levels,
and the clips it samples (``eval_steps`` Euler steps with CFG, the teacher's sampler) decoded
and compared with the decoded ground truth (PSNR and SSIM over the frame, PSNR inside the edit
mask and outside it: ``pvtt.eval.regions``). The rows go to the run's DVCLive log and to ``eval.csv`` in the artifact, and the
evaluation report puts every phase's rows in one table beside the final models.

It draws from its own generators and restores the train/eval mode, so a run with periodic
evaluation trains exactly as one without (resume stays bit-identical).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genbuild.media import side_by_side, to_uint8
from genbuild.metrics import classical as M
from genbuild.train.flow import fixed_loss, sample
from pvtt.eval.regions import cells_on_frames, region_scores

COLUMNS = ("step", "val_loss", "psnr", "ssim", "mask_psnr", "bg_psnr")


@dataclass
class PeriodicEval:
    val: object          # pvtt.train.data.Encoded
    codec: object        # decodes latents to frames
    items: int
    steps: int
    shift: float
    cfg_scale: float

    def __post_init__(self):
        n = min(self.items, len(self.val))
        self.cond = self.val.cond.select(slice(0, n))
        self.target = self.val.target[:n]
        self.noise = torch.randn(self.target.shape, generator=torch.Generator().manual_seed(1000))
        self.truth = [to_uint8(v) for v in self.codec.decode(self.target)]
        # The mask latents cover the latent grid; upsampled to frames for the region scores.
        self.inside = cells_on_frames(self.cond.edit_cells(), self.truth[0].shape[:3])

    @torch.no_grad()
    def __call__(self, model, step: int) -> tuple[dict, list[np.ndarray]]:
        """Scores at ``step`` and the animation (sample | truth per item, stacked side by side)."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        cond = self.cond.to(device)
        row = {"step": step, "val_loss": fixed_loss(model, self.target.to(device), cond, self.shift)}
        lat = sample(model, cond, self.noise.to(device), self.steps, self.shift, self.cfg_scale).cpu()
        preds = [to_uint8(v) for v in self.codec.decode(lat)]
        model.train(was_training)
        row["psnr"] = float(np.mean([M.psnr(p, t) for p, t in zip(preds, self.truth)]))
        row["ssim"] = float(np.mean([M.ssim(p, t) for p, t in zip(preds, self.truth)]))
        regions = [region_scores(p, t, k) for p, t, k in zip(preds, self.truth, self.inside)]
        row["mask_psnr"] = float(np.nanmean([r["mask_psnr"] for r in regions]))
        row["bg_psnr"] = float(np.nanmean([r["bg_psnr"] for r in regions]))
        cols = [c for i, (p, t) in enumerate(zip(preds, self.truth)) for c in ((f"sample {i}", p), (f"truth {i}", t))]
        return row, side_by_side(cols, scale=1)
