"""Region scores and the reference similarity (pvtt.eval.regions)."""
from __future__ import annotations

import numpy as np
import pytest

from pvtt.eval.regions import ReferenceSimilarity, region_cutouts, region_scores
from pvtt.models.encoders import TinyImageEncoder


def _clip(seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 256, (3, 24, 32, 3), dtype=np.uint8)
    mask = np.zeros((3, 24, 32), bool)
    mask[:, 6:14, 10:20] = True
    return truth, mask


def test_region_scores_separate_inside_from_background():
    truth, mask = _clip()
    bg_damaged = truth.copy()
    bg_damaged[~mask] = 0
    r = region_scores(bg_damaged, truth, mask)
    assert r["mask_psnr"] == 100.0 and r["bg_psnr"] < 10
    assert r["mask_ssim"] > r["bg_ssim"] + 0.3  # SSIM's 11 x 11 window sees across the edge: no exact 1
    edit_missed = truth.copy()
    edit_missed[mask] = 255 - edit_missed[mask]
    r = region_scores(edit_missed, truth, mask)
    assert r["bg_psnr"] == 100.0 and r["mask_psnr"] < 10 and r["bg_ssim"] > r["mask_ssim"] + 0.3
    assert np.isnan(region_scores(truth, truth, np.zeros_like(mask))["mask_psnr"])


def test_cutouts_are_the_mask_bounding_box_with_the_mask_as_alpha():
    truth, mask = _clip()
    mask[1] = False
    cuts = region_cutouts(truth, mask)
    assert len(cuts) == 2 and cuts[0].shape == (8, 10, 4)
    assert np.array_equal(cuts[0][..., :3], truth[0, 6:14, 10:20]) and (cuts[0][..., 3] == 255).all()


def test_reference_similarity_prefers_the_reference_itself():
    """The product painted into the mask scores higher than a different one, and it is 1 when the
    region shows the reference exactly as the reference view is prepared."""
    enc = TinyImageEncoder(64, seed=0)
    sim = ReferenceSimilarity(enc, 64, "tiny")
    assert sim.name == "ref_sim_tiny"
    ref = np.zeros((16, 16, 4), np.uint8)
    ref[..., 0], ref[..., 3] = 220, 255                       # an opaque red square
    frames = np.full((2, 24, 32, 3), 128, np.uint8)
    mask = np.zeros((2, 24, 32), bool)
    mask[:, 4:20, 8:24] = True
    right, wrong = frames.copy(), frames.copy()
    right[mask] = (220, 0, 0)
    wrong[mask] = (0, 0, 220)
    assert sim(right, mask, ref) == pytest.approx(1.0, abs=1e-5)
    assert sim(wrong, mask, ref) < sim(right, mask, ref) - 0.05
    assert np.isnan(sim(right, np.zeros_like(mask), ref))
