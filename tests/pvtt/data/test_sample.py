"""Embedded sample generator: ids, determinism, media facts and ground truth.

Runs the real generator (numpy/OpenCV rendering, ffmpeg encode) on a small config once per
module, then checks the outputs with ffprobe, ffmpeg decoding and PySceneDetect.
"""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from scenedetect import ContentDetector, detect

from genbuild.io.jsonio import read_json
from genbuild.io.masks import load_masks
from genbuild.io.video import probe, read_frames, read_image
from pvtt.data import sample as S

ROOT = Path(__file__).resolve().parents[3]

SMALL = {
    "seed": 7,
    "sample": {
        "n_videos": 3,
        "n_products": 4,
        "views_per_product": 2,
        "resolutions": [[320, 180], [256, 144]],
        "fps": [30, 25],
        "cuts_per_video": [2, 3],
        "shot_seconds": [1.0, 1.4],
        "product_image_size": 96,
    },
    "video": {"crf": 17, "preset": "medium", "threads": 1},
}


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "sample"
    manifest = S.generate_sample(out, SMALL)
    return out, manifest


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _truth(out: Path, vid: str) -> dict:
    return read_json(out / "truth" / f"{vid}.json")


def test_ids_match_sample_ids(gen):
    out, manifest = gen
    ids = S.sample_ids(SMALL["sample"])
    assert ids["videos"] == ["vid000", "vid001", "vid002"]
    assert ids["products"] == {f"prod{i:02d}": ["view0", "view1"] for i in range(4)}
    assert [v["id"] for v in manifest["videos"]] == ids["videos"]
    assert [p["id"] for p in manifest["products"]] == list(ids["products"])
    for vid in ids["videos"]:
        for rel in (f"videos/{vid}.mp4", f"truth/{vid}.json", f"truth/{vid}.masks.npy.gz"):
            assert (out / rel).is_file(), rel
    for pid, views in ids["products"].items():
        for view in views:
            assert (out / "products" / pid / f"{view}.png").is_file()
    assert read_json(out / "manifest.json") == manifest
    assert not list(out.parent.glob(".sample.tmp-*")), "temporary directory left behind"


def test_manifest_fields(gen):
    out, manifest = gen
    products = {p["id"]: p for p in manifest["products"]}
    assert {p["category"] for p in products.values()} == set(S.CATEGORIES)
    assert len({p["color"] for p in products.values()}) == len(products), "each product its own hue"
    for p in products.values():
        assert p["color"] in p["caption"] and p["category"] in p["caption"]
        assert [v["path"] for v in p["views"]] == [f"products/{p['id']}/view{j}.png" for j in range(2)]
    for i, v in enumerate(manifest["videos"]):
        assert v["path"] == f"videos/{v['id']}.mp4"
        assert v["product_id"] == f"prod{i % 4:02d}"
        assert v["category"] == products[v["product_id"]]["category"]
        assert v["caption"].startswith(products[v["product_id"]]["caption"])
        assert _truth(out, v["id"])["product_id"] == v["product_id"]


def test_deterministic(gen, tmp_path):
    out, _ = gen
    again = tmp_path / "again"
    S.generate_sample(again, SMALL)
    a, b = _files(out), _files(again)
    assert sorted(a) == sorted(b)
    different = [k for k in a if a[k] != b[k]]
    assert not different, f"not byte-identical: {different}"


def test_video_depends_on_seed_and_index_only(gen, tmp_path):
    out, _ = gen
    one = {**SMALL, "sample": {**SMALL["sample"], "n_videos": 1}}
    S.generate_sample(tmp_path / "same", one)
    S.generate_sample(tmp_path / "other", {**one, "seed": 8})
    ref = (out / "videos" / "vid000.mp4").read_bytes()
    assert (tmp_path / "same" / "videos" / "vid000.mp4").read_bytes() == ref
    assert (tmp_path / "other" / "videos" / "vid000.mp4").read_bytes() != ref


def test_probe_matches_truth(gen):
    out, manifest = gen
    for v in manifest["videos"]:
        info = probe(out / v["path"])
        t = _truth(out, v["id"])
        assert (info.width, info.height, info.n_frames) == (t["width"], t["height"], t["n_frames"])
        assert (v["width"], v["height"], v["n_frames"]) == (t["width"], t["height"], t["n_frames"])
        assert math.isclose(info.fps, t["fps"], rel_tol=1e-6) and v["fps"] == t["fps"]
        assert info.codec == "h264"


def test_resolutions_and_rates_vary(gen):
    _, manifest = gen
    assert len({(v["width"], v["height"]) for v in manifest["videos"]}) >= 2
    assert len({v["fps"] for v in manifest["videos"]}) >= 2


def test_every_resolution_fps_pair_occurs():
    specs = S.video_specs({**S.DEFAULT_SAMPLE, "n_videos": 4}, S.make_catalogue(1, 4))
    assert {(s.width, s.height, s.fps) for s in specs} == {
        (320, 180, 30), (256, 144, 30), (320, 180, 25), (256, 144, 25)}


@pytest.mark.parametrize("seconds", [1.0, 4.4, 12.0])
def test_camera_stays_inside_canvas(seconds):
    w, h, fps = 320, 180, 25
    cw, ch = int(math.ceil(w * S.CANVAS_FACTOR)), int(math.ceil(h * S.CANVAS_FACTOR))
    for k in range(40):
        cam, words = S.camera_path(np.random.default_rng(k), int(seconds * fps), fps, w, h, cw, ch)
        assert words
        for corner in ((0, 0), (w, 0), (0, h), (w, h)):
            x = cam[:, 0, 0] * corner[0] + cam[:, 0, 2]
            y = cam[:, 1, 1] * corner[1] + cam[:, 1, 2]
            assert x.min() >= -1e-6 and x.max() <= cw + 1e-6 and y.min() >= -1e-6 and y.max() <= ch + 1e-6
        step = np.abs(np.diff(cam[:, :, 2], axis=0)).max()
        assert step < 2.0, "camera moves too fast per frame"


def test_shots_and_cuts(gen):
    out, manifest = gen
    lo, hi = SMALL["sample"]["cuts_per_video"]
    s_lo, s_hi = SMALL["sample"]["shot_seconds"]
    for v in manifest["videos"]:
        t = _truth(out, v["id"])
        shots = t["shots"]
        assert lo <= len(t["cuts"]) <= hi
        assert t["cuts"] == [s["start_frame"] for s in shots[1:]]
        assert shots[0]["start_frame"] == 0 and shots[-1]["end_frame"] == t["n_frames"]
        for a, b in zip(shots, shots[1:]):
            assert a["end_frame"] == b["start_frame"]
            assert a["background"] != b["background"]
        for s in shots:
            n = s["end_frame"] - s["start_frame"]
            assert s_lo * t["fps"] - 1 <= n <= s_hi * t["fps"] + 1
            assert s["camera"]


def test_masks_match_frames(gen):
    out, manifest = gen
    for v in manifest["videos"]:
        t = _truth(out, v["id"])
        m = load_masks(out / "truth" / f"{v['id']}.masks.npy.gz")
        assert m.shape == (t["n_frames"], t["height"], t["width"])
        cover = m.reshape(len(m), -1).mean(axis=1)
        assert cover.min() > 0.04 and cover.max() < 0.22, (cover.min(), cover.max())
        border = np.zeros(m.shape[1:], bool)
        border[:3], border[-3:], border[:, :3], border[:, -3:] = True, True, True, True
        assert not (m & border).any(), "product touches the frame border"


def _hsv(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)


def test_product_more_saturated_than_background(gen):
    out, manifest = gen
    kernel = np.ones((5, 5), np.uint8)
    for v in manifest["videos"]:
        frames = read_frames(out / v["path"])
        m = load_masks(out / "truth" / f"{v['id']}.masks.npy.gz")
        for k in range(0, len(frames), 9):
            mk = m[k].astype(np.uint8)
            inner = cv2.erode(mk, kernel).astype(bool)
            outer = ~cv2.dilate(mk, kernel).astype(bool)
            sat = _hsv(frames[k])[..., 1].astype(float)
            assert sat[inner].mean() > 2.0 * sat[outer].mean() + 30, (v["id"], k)


def _hue_median(rgb: np.ndarray, where: np.ndarray) -> float:
    hsv = _hsv(rgb)
    keep = where & (hsv[..., 1] > 100)
    return float(np.median(hsv[..., 0][keep]))


def test_product_images(gen):
    out, manifest = gen
    size = SMALL["sample"]["product_image_size"]
    for p in manifest["products"]:
        boxes = []
        for view in p["views"]:
            img = read_image(out / view["path"])
            assert img.shape == (size, size, 3)
            for corner in (img[0, 0], img[0, -1], img[-1, 0], img[-1, -1]):
                assert (corner == 255).all()
            obj = (img < 250).any(axis=2)
            assert obj.mean() > 0.05
            assert not obj[:2].any() and not obj[-2:].any() and not obj[:, :2].any() and not obj[:, -2:].any()
            ys, xs = np.nonzero(obj)
            boxes.append((xs.max() - xs.min() + 1) / (ys.max() - ys.min() + 1))
            assert _hsv(img)[..., 1][obj].mean() > 100, "product must be saturated"
        assert abs(boxes[0] - boxes[1]) > 0.1, f"{p['id']}: view1 should differ in aspect ratio"


def test_video_product_matches_catalogue(gen):
    out, manifest = gen
    for v in manifest["videos"]:
        img = read_image(out / "products" / v["product_id"] / "view0.png")
        h_img = _hue_median(img, (img < 250).any(axis=2))
        frame = read_frames(out / v["path"])[0]
        m = load_masks(out / "truth" / f"{v['id']}.masks.npy.gz")[0]
        h_vid = _hue_median(frame, cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool))
        d = abs(h_img - h_vid)
        assert min(d, 180 - d) < 8, (v["id"], h_img, h_vid)


def test_scenedetect_finds_exactly_the_cuts(gen):
    out, manifest = gen
    for v in manifest["videos"]:
        truth = _truth(out, v["id"])["cuts"]
        scenes = detect(str(out / v["path"]), ContentDetector(threshold=27.0, min_scene_len=12))
        found = [s[0].frame_num for s in scenes[1:]]
        assert len(found) == len(truth), (v["id"], truth, found)
        assert all(abs(a - b) <= 1 for a, b in zip(found, truth)), (v["id"], truth, found)


def test_bad_params_name_the_key(tmp_path):
    bad = {**SMALL, "sample": {**SMALL["sample"], "resolutions": [[321, 180]]}}
    with pytest.raises(ValueError, match="sample.resolutions"):
        S.generate_sample(tmp_path / "bad", bad)
    assert not (tmp_path / "bad").exists()


def test_cli(tmp_path):
    import json
    params = {**SMALL, "sample": {**SMALL["sample"], "n_videos": 1, "n_products": 1,
                                  "cuts_per_video": [1, 1], "shot_seconds": [0.6, 0.6]}}
    out = tmp_path / "cli"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "sample.py"), "--params",
                          json.dumps(params), "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "vid000" in res.stderr
    assert read_json(out / "manifest.json")["videos"][0]["id"] == "vid000"
