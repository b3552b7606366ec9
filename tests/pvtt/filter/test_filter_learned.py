"""Filter L2 learned scores (pvtt.filter.learned) on tiny, randomly initialised real networks.

The networks are the classes of tests/kit/metrics/test_learned_metrics.py (open_clip CLIP, transformers Dinov2Model,
pyiqa MUSIQ), saved to disk and loaded through genbuild.metrics.learned's loaders exactly as real weights are.
Random weights give no meaningful numbers; what is fixed here: the crops/reference plumbing (an
edited product identical to the reference scores 1.0), temporal consistency (a still video scores
1.0, a flickering one less), thresholds -> reject reasons, scores.json contents, and the gate:
a configured score whose weights are missing stops the stage naming path, key and `dvc pull`.
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_filter import PARAMS as BASE_PARAMS
from test_filter import make_work
from test_learned_metrics import TINY_CLIP, TINY_DINO, TINY_MUSIQ

from genbuild.io.jsonio import read_json, read_jsonl
from genbuild.metrics import learned as quality
from genbuild.weights import MissingWeightsError
from pvtt.filter import filter as filters
from pvtt.filter import learned as FL

ROOT = Path(__file__).resolve().parents[3]
torch.set_num_threads(2)


def _params(**learned) -> dict:
    p = copy.deepcopy(BASE_PARAMS)
    p["filter"]["l2"]["learned"] = {"device": "cpu", **learned}
    return p


def _all(clip_min=0.0, dino_min=0.0, musiq_min=-1e9, temporal_min=0.0) -> dict:
    return {"clip_i": {"weights": "models/clip.bin", "model_config": TINY_CLIP, "min": clip_min, "frames": 6},
            "dino_i": {"weights": "models/dinov2", "resize": 56, "crop": 56, "min": dino_min},
            "musiq": {"weights": "models/musiq.pth", "arch": TINY_MUSIQ, "min": musiq_min, "frames": 3},
            "clip_temporal": {"min": temporal_min}}


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    """<root>/models/{clip.bin, dinov2/, musiq.pth}: tiny random real architectures, saved as real weights are."""
    import open_clip
    from pyiqa.archs.musiq_arch import MUSIQ
    from transformers import Dinov2Config, Dinov2Model

    root = tmp_path_factory.mktemp("weights")
    (root / "models").mkdir()
    torch.manual_seed(0)
    torch.save(open_clip.CLIP(**TINY_CLIP).state_dict(), root / "models/clip.bin")
    Dinov2Model(Dinov2Config(**TINY_DINO)).save_pretrained(root / "models/dinov2")
    torch.save({"params": MUSIQ(pretrained=False, **TINY_MUSIQ).state_dict()}, root / "models/musiq.pth")
    return root


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return make_work(tmp_path_factory.mktemp("flt"), {"p_clean": "clean", "p_flicker": "flicker", "p_blur": "blur"})


# ------------------------------------------------------------------------------------------ units
def test_product_crop_equal_to_reference_scores_one(models_root):
    scorer = FL.load(_params(**{k: v for k, v in _all().items() if k in ("clip_i", "dino_i")}), models_root)
    rng = np.random.default_rng(0)
    product = rng.integers(0, 200, (20, 12, 3), dtype=np.uint8)
    # The products stage pads cut-outs with 4 px of transparency; the crop adds the same 4 px (masked white).
    ref = np.zeros((28, 20, 4), np.uint8)
    ref[4:24, 4:16, :3], ref[4:24, 4:16, 3] = product, 255
    frames = np.full((5, 48, 64, 3), 255, np.uint8)
    masks = np.zeros((5, 48, 64), bool)
    for t in range(5):                       # product moves; the background outside the mask is ignored
        y, x = 10 + t, 20 + 2 * t
        frames[t, y:y + 20, x:x + 12] = product
        masks[t, y:y + 20, x:x + 12] = True
    frames[:, :, :10] = rng.integers(0, 255, (5, 48, 10, 3), dtype=np.uint8)
    crops, idx = FL.product_crops(frames, masks)
    assert crops.shape == (5, FL.CROP_SIZE, FL.CROP_SIZE, 3) and idx == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(crops[0], FL.reference_on_white(ref))
    vals, reasons = scorer.score(frames, masks, FL.reference_on_white(ref))
    assert vals["clip_i"] == pytest.approx(1.0, abs=1e-5) and vals["dino_i"] == pytest.approx(1.0, abs=1e-5)
    assert reasons == []
    other = FL.reference_on_white(np.dstack([255 - ref[..., :3], ref[..., 3:]]))
    lower, _ = scorer.score(frames, masks, other)
    assert lower["clip_i"] < 1.0 - 1e-4 and lower["dino_i"] < 1.0 - 1e-4
    empty, why = scorer.score(frames, np.zeros_like(masks), FL.reference_on_white(ref))
    assert empty == {"clip_i": None, "dino_i": None}
    assert why == ["l2: clip_i undefined (new product mask empty in every frame)",
                   "l2: dino_i undefined (new product mask empty in every frame)"]


def test_temporal_and_musiq(models_root):
    scorer = FL.load(_params(musiq=_all()["musiq"], clip_temporal=_all(temporal_min=0.99999)["clip_temporal"]
                             | {"weights": "models/clip.bin", "model_config": TINY_CLIP}), models_root)
    assert not scorer.needs_reference
    rng = np.random.default_rng(1)
    still = np.repeat(rng.integers(0, 255, (1, 48, 64, 3), dtype=np.uint8), 6, axis=0)
    flicker = still.copy()
    flicker[1::2] = 255 - flicker[1::2]
    masks = np.zeros(still.shape[:3], bool)
    a, ra = scorer.score(still, masks, None)
    b, rb = scorer.score(flicker, masks, None)
    assert a["clip_temporal"] == pytest.approx(1.0, abs=1e-5) and ra == []
    assert b["clip_temporal"] < 0.9999
    assert rb == [f"l2: clip_temporal {b['clip_temporal']:.4f} < 0.99999"]
    assert np.isfinite(a["musiq"]) and scorer.score(still, masks, None)[0]["musiq"] == a["musiq"]
    # musiq "frames: 3" scores 3 evenly spaced frames, first and last included
    assert FL.even_indices(6, 3) == [0, 2, 5] and FL.even_indices(6, None) == list(range(6))
    m = scorer.metrics["musiq"]
    assert b["musiq"] == pytest.approx(m.score(flicker[[0, 2, 5]], None, None, None), abs=1e-6)


def test_config_validation_names_key():
    assert FL.read_config(BASE_PARAMS) is None
    assert FL.read_config(_params()) is None                      # only 'device': nothing enabled
    assert FL.read_config(_params(clip_i=None, musiq={})) is None
    cases = [({"clip-i": {"weights": "x", "min": 0}}, "filter.l2.learned"),
             ({"clip_i": {"weights": "x"}}, "filter.l2.learned.clip_i.min"),
             ({"dino_i": {"weights": "x", "min": True}}, "filter.l2.learned.dino_i.min"),
             ({"musiq": {"min": 3}}, "filter.l2.learned.musiq.weights"),
             ({"musiq": {"weights": "x", "min": 3, "frames": 0}}, "filter.l2.learned.musiq.frames"),
             ({"clip_temporal": {"min": 0.9}}, "filter.l2.learned.clip_temporal"),
             ({"clip_temporal": {"min": 0.9, "frames": 4, "weights": "x"}}, "filter.l2.learned.clip_temporal.frames")]
    for learned, key in cases:
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            FL.read_config(_params(**learned))
    cfg = FL.read_config(_params(clip_i={"weights": "c.bin", "model": "ViT-B-32", "min": 0.2},
                                 clip_temporal={"min": 0.9}))
    assert cfg["scores"]["clip_temporal"]["entry"] == {"weights": "c.bin", "model": "ViT-B-32"}
    assert cfg["scores"]["clip_temporal"]["weights_key"] == "filter.l2.learned.clip_i.weights"


# ------------------------------------------------------------------------------------------ stage
def test_filter_stage_stores_scores_and_reasons(models_root, work, tmp_path):
    out = tmp_path / "f"
    doc = filters.run(_params(**_all()), work["work"], work["pairs"], work["synth"], out, root=models_root)
    assert read_json(out / "scores.json") == doc
    assert set(doc["models"]) == {"clip_i", "dino_i", "musiq", "clip_temporal"}
    assert "models/clip.bin" in doc["models"]["clip_i"] and "models/dinov2" in doc["models"]["dino_i"]
    clean = doc["pairs"]["p_clean"]
    assert clean["kept"] and clean["reasons"] == [] and clean["l2"]["pass"]
    for pid, s in doc["pairs"].items():
        for k in ("clip_i", "dino_i", "musiq", "clip_temporal"):
            assert isinstance(s["l2"][k], float) and np.isfinite(s["l2"][k]), (pid, k)
        assert -1.0 <= s["l2"]["clip_i"] <= 1.0 and -1.0 <= s["l2"]["clip_temporal"] <= 1.0 + 1e-6
    # the weight-free reasons are unchanged by the learned scores
    assert not doc["pairs"]["p_flicker"]["kept"] and doc["pairs"]["p_flicker"]["reasons"][0].startswith("l2: warp_error")
    assert doc["pairs"]["p_blur"]["reasons"][0].startswith("l2: sharpness_ratio")
    # the same loaded networks, directly: the stored number is what the metric gives for these crops
    scorer = FL.load(_params(**_all()), models_root)
    from genbuild.io.masks import load_masks
    from genbuild.io.video import read_frames, read_image

    edited = read_frames(work["synth"] / "p_clean/edited.mp4")
    masks = load_masks(work["synth"] / "p_clean/mask.npy.gz")
    ref = FL.reference_on_white(read_image(work["work"] / "products/prod01/view0.png", "RGBA"))
    crops, _ = FL.product_crops(edited, masks)
    sel = crops[FL.even_indices(len(crops), 6)]
    assert clean["l2"]["clip_i"] == pytest.approx(scorer.metrics["clip_i"].score(sel, None, ref, None), abs=2e-6)

    # a threshold above every value: the clean pair is rejected by learned L2 with the value in the reason
    strict = _all(temporal_min=1.5)
    out2 = tmp_path / "f2"
    doc2 = filters.run(_params(**strict), work["work"], work["pairs"], work["synth"], out2, root=models_root)
    c2 = doc2["pairs"]["p_clean"]
    assert not c2["kept"] and not c2["l2"]["pass"] and c2["l1"]["pass"]
    assert c2["reasons"] == [f"l2: clip_temporal {c2['l2']['clip_temporal']:.4f} < 1.5"]
    rows = {r["item"]: r for r in read_jsonl(out2 / "rejects.jsonl")}
    assert rows["p_clean"]["reason"] == c2["reasons"][0] and rows["p_clean"]["l2"]["clip_temporal"] == c2["l2"]["clip_temporal"]


def test_missing_weights_stop_the_stage(models_root, work, tmp_path):
    learned = _all()
    learned["dino_i"]["weights"] = "models/dinov2-base"           # not there
    out = tmp_path / "f"
    with pytest.raises(MissingWeightsError) as e:
        filters.run(_params(**learned), work["work"], work["pairs"], work["synth"], out, root=models_root)
    msg = str(e.value)
    assert str(models_root / "models/dinov2-base") in msg
    assert "filter.l2.learned.dino_i.weights" in msg and "dvc pull models/dinov2-base" in msg
    assert not out.exists()
    # the CLI stops with the same message and a non-zero exit, writing nothing
    params = _params(clip_i={"weights": "models/nope.bin", "model": "ViT-H-14", "min": 0.2})
    cmd = [sys.executable, str(ROOT / "scripts/filter.py"), "--params", json.dumps(params), "--work", str(work["work"]),
           "--pairs", str(work["pairs"]), "--synth", str(work["synth"]), "--out", str(out), "--root", str(models_root)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode != 0
    assert "dvc pull models/nope.bin" in res.stderr and "filter.l2.learned.clip_i.weights" in res.stderr
    assert str(models_root / "models/nope.bin") in res.stderr and not out.exists()


def test_quality_load_metric_is_the_loader(models_root):
    m = quality.load_metric("clip_i", {"weights": "models/clip.bin", "model_config": TINY_CLIP, "min": 0.3},
                            models_root)
    assert isinstance(m, quality.ClipI)
    with pytest.raises(quality.Unavailable, match="not found"):
        quality.load_metric("musiq", {"weights": "models/x.pth"}, models_root)
    with pytest.raises(ValueError, match="unknown"):
        quality.load_metric("clipi", {"weights": "x"}, models_root)
