"""Quality gates of the progressive chain: a student is kept only if it stays close to its teacher.

The seed asks for 50 -> 16 -> 8 -> 4 steps with less than 5 % quality loss at each step. After
training, each student and the teacher sample the first ``distill.gate.items`` val clips from the
same noise (the teacher with ``eval.teacher_steps`` steps and CFG ``eval.cfg_scale``, as the
evaluation samples it; the student with its own steps, no CFG), and both are scored against the
ground truth with the evaluation's own weight-free metrics (``pvtt.eval.regions.clip_scores`` and
the reference similarity), masks being the latent mask on the pixel grid. Every metric has a
direction; the relative drop (teacher - student) / |teacher| of each must stay within
``distill.gate.max_drop`` (0.05 by default). A student that fails stops its rule with a
``GateFailed`` naming each failing metric and its numbers, so nothing downstream builds on it; the
numbers go to the student's ``metrics.json`` (and the report) when it passes, and to
``work/logs/<student>.gate.json`` either way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from genbuild.media import to_uint8
from genbuild.train.flow import sample
from pvtt.eval.regions import ReferenceSimilarity, cells_on_frames, clip_scores

# Every gated metric is better when higher (PSNR, SSIM, their regions, temporal consistency, the
# reference similarity). A lower-is-better metric would be added here with -1.
DIRECTION = {"psnr": 1, "ssim": 1, "mask_psnr": 1, "mask_ssim": 1, "bg_psnr": 1, "bg_ssim": 1,
             "temporal_consistency": 1, "ref_sim": 1}


class GateFailed(RuntimeError):
    """A student lost more than ``distill.gate.max_drop`` of its teacher's quality on a metric."""


@dataclass
class GateResult:
    teacher: dict[str, float]
    student: dict[str, float]
    drops: dict[str, float]
    max_drop: float

    @property
    def failures(self) -> dict[str, float]:
        return {k: d for k, d in self.drops.items() if d > self.max_drop}

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        return {"passed": self.passed, "max_drop": self.max_drop, "teacher": self.teacher, "student": self.student,
                "relative_drop": self.drops, "failed": sorted(self.failures)}

    def message(self, student: str) -> str:
        parts = [f"{k}: teacher {self.teacher[k]:.4f}, {student} {self.student[k]:.4f}, drop {100 * d:.1f} %"
                 for k, d in sorted(self.failures.items())]
        return (f"{student} fails the quality gate (distill.gate.max_drop = {100 * self.max_drop:.1f} % relative): "
                + "; ".join(parts))


def relative_drops(teacher: dict[str, float], student: dict[str, float]) -> dict[str, float]:
    """(teacher - student) / |teacher| per metric, signed by the metric's direction (a gain is
    negative); metrics that are not finite on either side are left out."""
    out = {}
    for k, sign in DIRECTION.items():
        t, s = teacher.get(k), student.get(k)
        if t is None or s is None or not (math.isfinite(t) and math.isfinite(s)):
            continue
        out[k] = sign * (t - s) / max(abs(t), 1e-12)
    return out


@torch.no_grad()
def _scores(model, data, codec, truth: list, masks: list, ref_sim: ReferenceSimilarity, steps: int, shift: float,
            cfg: float) -> dict:
    per = []
    for i in range(len(truth)):
        noise = torch.randn(data.target[i:i + 1].shape, generator=torch.Generator().manual_seed(2000 + i))
        pred = to_uint8(codec.decode(sample(model.eval(), data.cond.select(slice(i, i + 1)), noise, steps, shift, cfg))[0])
        per.append({**clip_scores(pred, truth[i], masks[i]), "ref_sim": ref_sim.from_tokens(pred, masks[i], data.cond.image_tokens[i])})
    return {k: float(np.nanmean([p[k] for p in per])) for k in per[0]}


def check(student, teacher, val, bundle, steps: int, teacher_steps: int, teacher_cfg: float, shift: float,
          items: int, max_drop: float) -> GateResult:
    """Score teacher and student on the first ``items`` val clips; the gate's verdict."""
    data = type(val)(val.keys[:items], val.target[:items], val.cond.select(slice(0, items)))
    ref_sim = ReferenceSimilarity(bundle.image_encoder, bundle.components["image_encoder"]["size"],
                                  bundle.components["image_encoder"].get("kind", "tiny"))
    with torch.no_grad():
        truth = [to_uint8(v) for v in bundle.codec.decode(data.target)]
    masks = cells_on_frames(data.cond.edit_cells(), truth[0].shape[:3])
    t = _scores(teacher, data, bundle.codec, truth, masks, ref_sim, teacher_steps, shift, teacher_cfg)
    s = _scores(student, data, bundle.codec, truth, masks, ref_sim, steps, shift, 1.0)
    return GateResult(t, s, relative_drops(t, s), max_drop)
