"""Mask QC stage: good masks are kept, broken ones are rejected with the failed check."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from test_masks import CLIP_SPECS, write_clips_dir

from genbuild.io.jsonio import read_json, read_jsonl, write_json
from genbuild.io.masks import save_masks
from pvtt.data import maskqc as Q
from pvtt.data import masks as M

PARAMS = {"maskqc": {"min_temporal_iou": 0.9, "min_area_frac": 0.003, "max_empty_frac": 0.05,
                     "max_border_frac": 0.5}}


def write_masks_dir(root, video, stacks: dict) -> object:
    d = root / "masks" / video
    d.mkdir(parents=True, exist_ok=True)
    clips = {}
    for cid, m in stacks.items():
        save_masks(d / f"{cid}.npy.gz", m)
        clips[cid] = {"n_frames": len(m), "area_frac": [float(x.mean()) for x in m], "bbox": [None] * len(m),
                      "backend": "test", "path": f"{cid}.npy.gz"}
    write_json(d / "masks.json", {"video": video, "clips": clips})
    (d / "rejects.jsonl").write_text("")
    return d


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("work")
    specs = {k: CLIP_SPECS[k] for k in ("c000", "c001", "c002", "c003")}
    specs["c004"] = CLIP_SPECS["c004"]
    clips_dir, truth = write_clips_dir(root, specs=specs, n_frames=48)
    rng = np.random.default_rng(0)
    gt = {cid: truth[cid][1] for cid in truth}
    stacks = {"c000": gt["c000"]}                       # ground truth: must pass
    dropped = gt["c001"].copy()
    dropped[10:16] = False                              # six missed detections
    stacks["c001"] = dropped
    jitter = np.stack([np.roll(m, tuple(rng.integers(-4, 5, size=2)), axis=(0, 1)) for m in gt["c002"]])
    stacks["c002"] = jitter                             # flickering mask
    stacks["c003"] = ~gt["c003"]                        # background taken for the product
    stacks["c004"] = gt["c004"]
    masks_dir = write_masks_dir(root, "v000", stacks)
    (masks_dir / "c004.npy.gz").write_bytes(b"\x1f\x8b broken")
    out = root / "maskqc" / "v000"
    Q.main(["--params", json.dumps(PARAMS), "--clips", str(clips_dir), "--masks", str(masks_dir), "--out", str(out)])
    return root, clips_dir, truth, out


def test_ground_truth_masks_are_kept(work):
    *_, out = work
    qc = read_json(out / "qc.json")
    c = qc["clips"]["c000"]
    assert qc["video"] == "v000"
    assert c["kept"] is True and c["reasons"] == []
    assert c["temporal_iou_mean"] >= 0.93 and c["temporal_iou_min"] >= 0.85
    assert c["empty_frac"] == 0 and c["border_frac"] == 0 and c["area_jump_max"] < 0.1
    assert c["edge_contrast"] > 2.0 and c["extra_blob_frac"] == 0
    assert set(c) == {"kept", "temporal_iou_mean", "temporal_iou_min", "empty_frac", "border_frac",
                      "area_jump_max", "edge_contrast", "extra_blob_frac", "reasons"}


def test_broken_masks_are_rejected_with_the_failed_check(work):
    *_, out = work
    qc = read_json(out / "qc.json")["clips"]
    assert qc["c001"]["kept"] is False
    assert qc["c001"]["empty_frac"] == pytest.approx(6 / 48, abs=1e-3)
    assert any(r.startswith("empty masks") and "> 0.05" in r for r in qc["c001"]["reasons"])
    assert any(r.startswith("sudden area jump") for r in qc["c001"]["reasons"])
    assert qc["c001"]["temporal_iou_min"] == 0.0
    assert qc["c002"]["kept"] is False and qc["c002"]["temporal_iou_mean"] < 0.8
    assert qc["c002"]["reasons"][0].startswith("low temporal IoU: mean 0.") and "< 0.9" in qc["c002"]["reasons"][0]
    assert qc["c003"]["kept"] is False and qc["c003"]["border_frac"] > 0.5
    assert any(r.startswith("mask on frame border") for r in qc["c003"]["reasons"])
    assert "c004" not in qc
    rows = {r["item"]: r for r in read_jsonl(out / "rejects.jsonl")}
    assert sorted(rows) == ["c001", "c002", "c003", "c004"]
    assert all(r["stage"] == "maskqc" for r in rows.values())
    assert rows["c004"]["reason"].startswith("unreadable masks")
    assert rows["c002"]["checks"] == qc["c002"]["reasons"]


def test_classical_masks_pass_qc(work, tmp_path):
    root, clips_dir, truth, _ = work
    masks_dir = tmp_path / "masks"
    M.main(["--params", json.dumps({"masks": {"backend": "classical", "min_area_frac": 0.003}}),
            "--clips", str(clips_dir), "--out", str(masks_dir)])
    out = tmp_path / "qc"
    Q.main(["--params", json.dumps(PARAMS), "--clips", str(clips_dir), "--masks", str(masks_dir), "--out", str(out)])
    qc = read_json(out / "qc.json")["clips"]
    assert sorted(qc) == sorted(truth)
    assert all(c["kept"] for c in qc.values()), qc
    assert read_jsonl(out / "rejects.jsonl") == []


def test_metrics_on_small_cases():
    m = np.zeros((20, 30), bool)
    m[5:10, 5:10] = True
    assert Q.border_fraction(m) == 0.0
    edge = np.zeros((20, 30), bool)
    edge[:, :4] = True   # left band: boundary = 80 - 18*2 interior pixels; on the ring: 20 + 3 + 3
    assert Q.border_fraction(edge) == pytest.approx(26 / 44)
    assert Q.border_fraction(np.zeros((4, 4), bool)) == 0.0
    np.testing.assert_allclose(Q.area_jumps(np.array([0.1, 0.1, 0.05, 0.0, 0.0])), [0, 0.5, 1.0, 0.0])
    frames = np.zeros((3, 20, 30, 3), np.uint8)
    assert Q.temporal_ious(frames, np.stack([m, m, m])) == [1.0, 1.0]


def test_edge_quality_and_false_detections(work):
    """An eroded mask (boundary inside the product) fails the edge check; a second object in
    every frame fails the false-detection check; ground truth passes both."""
    _, _, truth, _ = work
    frames, gt, _ = truth["c003"]
    cfg = Q.validate_params({})
    assert Q.clip_qc(frames, gt, cfg)["kept"]
    eroded = np.stack([cv2.erode(m.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) for m in gt])
    res = Q.clip_qc(frames, eroded, cfg)
    assert res["edge_contrast"] < 1.2 < Q.clip_qc(frames, gt, cfg)["edge_contrast"]
    assert any(r.startswith("poor mask edges: edge contrast 0.") for r in res["reasons"])
    twin = gt.copy()
    h, w = gt.shape[1:]
    area = int(gt[0].sum())
    side = int(np.ceil(np.sqrt(area)))
    twin[:, 1:1 + side, 1:1 + side] |= True                       # a second object as large, in a corner
    res = Q.clip_qc(frames, twin, cfg)
    assert res["extra_blob_frac"] > 0.1          # every frame where the moving product does not touch it
    assert any(r.startswith("false detections: 0.") for r in res["reasons"])
    assert Q.edge_contrast(frames[0], np.zeros(gt.shape[1:], bool)) is None
    assert not Q.extra_blobs(gt[0])


def test_rerun_is_identical(work, tmp_path):
    root, clips_dir, _, out = work
    again = tmp_path / "again"
    Q.main(["--params", json.dumps(PARAMS), "--clips", str(clips_dir), "--masks", str(root / "masks" / "v000"),
            "--out", str(again)])
    for name in ("qc.json", "rejects.jsonl"):
        assert (out / name).read_bytes() == (again / name).read_bytes()


def test_defaults():
    cfg = Q.validate_params({})
    assert cfg == {"min_temporal_iou": 0.9, "min_area_frac": 0.003, "max_empty_frac": 0.05,
                   "max_border_frac": 0.5, "max_area_jump": 0.5, "min_edge_contrast": 1.2,
                   "max_extra_blob_frac": 0.1}


@pytest.mark.parametrize("params, key", [
    ({"maskqc": {"min_temporal_iou": 1.2}}, "maskqc.min_temporal_iou"),
    ({"maskqc": {"max_empty_frac": "lots"}}, "maskqc.max_empty_frac"),
    ({"maskqc": {"max_border": 0.5}}, "maskqc.max_border"),
    ({"maskqc": []}, "maskqc"),
])
def test_invalid_params_name_the_key(params, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        Q.validate_params(params)
