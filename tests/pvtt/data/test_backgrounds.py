"""Backgrounds stage: the product is removed, the rest of the frame is left alone."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from test_maskqc import write_masks_dir
from test_masks import CLIP_SPECS, write_clips_dir

from genbuild.io.jsonio import read_json, read_jsonl, write_json
from genbuild.io.video import probe, read_frames
from genbuild.metrics.classical import psnr
from pvtt.data import backgrounds as B

PARAMS = {"backgrounds": {"backend": "opencv", "dilate": 3, "radius": 3, "temporal_window": 12},
          "video": {"crf": 17, "preset": "medium", "threads": 1}}


def _qc(kept: dict) -> dict:
    return {"video": "v000", "clips": {cid: {"kept": k, "temporal_iou_mean": 0.97, "temporal_iou_min": 0.95,
                                             "empty_frac": 0.0, "border_frac": 0.0, "area_jump_max": 0.01,
                                             "reasons": [] if k else ["low temporal IoU: mean 0.5 < 0.9"]}
                                       for cid, k in kept.items()}}


def _run(root, clips_dir, masks_dir, qc_dir, out, params=PARAMS):
    B.main(["--params", json.dumps(params), "--clips", str(clips_dir), "--masks", str(masks_dir),
            "--maskqc", str(qc_dir), "--out", str(out)])


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("work")
    specs = {"c000": CLIP_SPECS["c000"], "c001": CLIP_SPECS["c001"], "c002": CLIP_SPECS["c002"]}
    clips_dir, truth = write_clips_dir(root, specs=specs, n_frames=48)
    stacks = {cid: truth[cid][1] for cid in ("c000", "c001")}
    stacks["c002"] = truth["c002"][1][:-3]                     # wrong length: must be rejected
    masks_dir = write_masks_dir(root, "v000", stacks)
    qc_dir = root / "maskqc" / "v000"
    qc_dir.mkdir(parents=True)
    write_json(qc_dir / "qc.json", _qc({"c000": True, "c001": False, "c002": True}))
    out = root / "backgrounds" / "v000"
    _run(root, clips_dir, masks_dir, qc_dir, out)
    return root, clips_dir, masks_dir, qc_dir, truth, out


def test_outputs_and_format(work):
    *_, truth, out = work
    info = read_json(out / "backgrounds.json")
    assert info["video"] == "v000"
    assert sorted(info["clips"]) == ["c000"]                   # c001 dropped by QC: simply absent
    entry = info["clips"]["c000"]
    assert entry["n_frames"] == 48 and entry["backend"] == "opencv" and entry["path"] == "c000.mp4"
    assert 0.0 < entry["filled_from_time_frac"] <= 1.0
    vi = probe(out / "c000.mp4")
    assert (vi.width, vi.height, vi.n_frames) == (160, 90, 48) and vi.fps == pytest.approx(24.0)
    assert not (out / "c001.mp4").exists() and not (out / "c002.mp4").exists()
    rows = read_jsonl(out / "rejects.jsonl")
    assert [(r["stage"], r["item"]) for r in rows] == [("backgrounds", "c002")]
    assert rows[0]["reason"].startswith("mask/clip mismatch")


def test_product_is_removed_and_background_kept(work):
    *_, truth, out = work
    frames, gt, bg = truth["c000"]
    clean = read_frames(out / "c000.mp4")
    inside_before = psnr(frames, bg, gt)
    inside_after = psnr(clean, bg, gt)
    print(f"PSNR inside mask vs true background: input {inside_before:.1f} dB, output {inside_after:.1f} dB")
    assert inside_after > inside_before + 10 and inside_after > 22
    near = np.stack([cv2.dilate(m.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) for m in gt])
    assert psnr(clean, frames, ~near) > 38                     # untouched up to the re-encode
    assert psnr(clean, bg, ~near) > 35


def test_temporal_fill_beats_inpainting_alone(work):
    *_, truth, _ = work
    frames, gt, bg = truth["c000"]
    cfg, _ = B.validate_params(PARAMS)
    full, info = B.get_backend("opencv", cfg).remove(frames, gt)
    alone, info0 = B.get_backend("opencv", {**cfg, "temporal_window": 0}).remove(frames, gt)
    assert info0["filled_from_time_frac"] == 0.0 and info["filled_from_time_frac"] > 0.2
    assert psnr(full, bg, gt) > psnr(alone, bg, gt) + 1.0
    hole = np.stack([cv2.dilate(m.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))) > 0
                     for m in gt])
    assert np.array_equal(full[~hole], frames[~hole])          # outside the dilated mask: bit-identical


def test_camera_motion_follows_the_pan(work):
    *_, truth, _ = work
    frames, gt, _ = truth["c000"]
    mo = B.camera_motion(frames, gt)
    # spec c000: pan (0.35, 0.12) px/frame and zoom 1 -> 1.12 over the clip (48 frames here)
    scale = 1 + 0.12 * 47 / 47
    assert np.hypot(*mo[-1][:2, 0]) == pytest.approx(1 / scale, abs=0.03)
    centre = np.array([80.0, 45.0, 1.0])
    moved = (mo[-1] @ centre)[:2] - centre[:2]                 # where frame 47's centre is in frame 0
    np.testing.assert_allclose(moved, [0.35 * 47, 0.12 * 47], atol=2.0)


def test_rerun_is_byte_identical(work, tmp_path):
    root, clips_dir, masks_dir, qc_dir, _, out = work
    again = tmp_path / "again"
    _run(root, clips_dir, masks_dir, qc_dir, again)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for n in names:
        assert (out / n).read_bytes() == (again / n).read_bytes(), n


def test_no_kept_clip_writes_empty_outputs(work, tmp_path):
    root, clips_dir, masks_dir, _, _, _ = work
    qc_dir = tmp_path / "qc"
    qc_dir.mkdir()
    write_json(qc_dir / "qc.json", {"video": "v000", "clips": {}})
    out = tmp_path / "bg"
    _run(root, clips_dir, masks_dir, qc_dir, out)
    assert read_json(out / "backgrounds.json") == {"video": "v000", "clips": {}}
    assert (out / "rejects.jsonl").read_text() == ""


@pytest.mark.parametrize("params, key", [
    ({"backgrounds": {"backend": "vace"}}, "backgrounds.backend"),
    ({"backgrounds": {"dilate": -1}}, "backgrounds.dilate"),
    ({"backgrounds": {"temporal_window": 2.5}}, "backgrounds.temporal_window"),
    ({"backgrounds": {"radius": 0}}, "backgrounds.radius"),
    ({"backgrounds": {"window": 3}}, "backgrounds.window"),
    ({"video": {"preset": "fastest"}}, "video.preset"),
    ({"video": {"crf": 60}}, "video.crf"),
])
def test_invalid_params_name_the_key(params, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        B.validate_params(params)


def test_unknown_backend_lists_known_names():
    with pytest.raises(ValueError, match="opencv"):
        B.get_backend("vace", {})
