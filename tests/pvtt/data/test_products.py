"""Products stage: white-background matting against drawn shapes; bad views rejected, stage completes."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from genbuild.io.jsonio import read_json, read_jsonl
from genbuild.io.video import read_image
from pvtt.data import products as P

ROOT = Path(__file__).resolve().parents[3]
PARAMS = {"products": {"backend": "white_matting", "white_threshold": 232, "feather": 1, "pad": 4,
                       "rembg_model": "models/rembg/u2net.onnx"}}
W, H = 160, 160


def bottle_shape() -> np.ndarray:
    """A bottle-like silhouette: ellipse body + rectangular neck (bool (H, W))."""
    m = np.zeros((H, W), np.uint8)
    cv2.ellipse(m, (80, 100), (38, 45), 0, 0, 360, 1, -1)
    cv2.rectangle(m, (70, 25), (90, 60), 1, -1)
    return m.astype(bool)


def product_image(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    shape = bottle_shape()
    img = np.full((H, W, 3), 255, np.uint8)
    noise = rng.integers(-3, 4, (H, W, 3))
    img = np.clip(img.astype(int) + np.minimum(noise, 0), 0, 255).astype(np.uint8)   # near-white, slightly noisy
    img[shape] = (40, 110, 60)
    img[80:100, 70:90] = 250          # a white label inside the product: a hole to fill
    img[10:13, 140:143] = 0           # dust speck: removed by the opening
    img[140:150, 10:20] = 90          # small separate blob (100 px < 10% of the bottle): dropped
    return img, shape


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("prod")
    rng = np.random.default_rng(0)
    img, shape = product_image(rng)
    Image.fromarray(img).save(d / "good.png")
    Image.fromarray(img).save(d / "good.jpg", quality=92)
    rgba = np.dstack([img, np.where(shape, 255, 0).astype(np.uint8)])
    rgba[~shape, :3] = 0                                   # black but transparent background
    Image.fromarray(rgba).save(d / "cutout.png")
    np.save(d / "shape.npy", shape)
    (d / "not_an_image.png").write_text("this is not a PNG\n")
    (d / "empty.png").write_bytes(b"")
    Image.fromarray(np.full((64, 64, 3), 255, np.uint8)).save(d / "white.png")
    Image.fromarray(rng.integers(0, 200, (64, 64, 3), dtype=np.uint8)).save(d / "photo.png")
    m = {"videos": [], "products": [
        {"id": "prod00", "category": "bottle", "name": "Bottle", "caption": "a green bottle",
         "views": [{"view": "view0", "path": "good.png"}, {"view": "view1", "path": "good.jpg"},
                   {"view": "view2", "path": "cutout.png"}, {"view": "view3", "path": "not_an_image.png"},
                   {"view": "view4", "path": "empty.png"}, {"view": "view5", "path": "white.png"},
                   {"view": "view6", "path": "missing.png"}, {"view": "view7", "path": "photo.png"}]},
        {"id": "prod01", "category": "box", "name": "Box", "caption": "a box",
         "views": [{"view": "view0", "path": "empty.png"}, {"view": "view1", "path": "not_an_image.png"}]},
    ]}
    (d / "manifest.json").write_text(json.dumps(m))
    return d


def run_cli(manifest: Path, pid: str, out: Path, params: dict = PARAMS) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "products.py"), "--params", json.dumps(params),
                           "--manifest", str(manifest), "--product-id", pid, "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT)


def iou_with_shape(rgba: np.ndarray, shape: np.ndarray, box: list[int]) -> float:
    """IoU of the cut-out's alpha (placed back at ``box`` in the source image) with the drawn shape."""
    x0, y0, x1, y1 = box
    got = np.zeros((H + 2 * 16, W + 2 * 16), bool)       # room for boxes that extend past the image
    got[y0 + 16:y1 + 16, x0 + 16:x1 + 16] = rgba[..., 3] > 127
    got = got[16:16 + H, 16:16 + W]
    return float((got & shape).sum() / (got | shape).sum())


def test_views_matted_and_bad_views_rejected(manifest, tmp_path):
    out = tmp_path / "products" / "prod00"
    res = run_cli(manifest / "manifest.json", "prod00", out)
    assert res.returncode == 0, res.stderr
    js = read_json(out / "product.json")
    assert js["status"] == "ok" and js["reason"] is None and js["backend"] == "white_matting"
    assert (js["id"], js["category"], js["name"], js["caption"]) == ("prod00", "bottle", "Bottle", "a green bottle")
    assert [v["view"] for v in js["views"]] == ["view0", "view1", "view2"]
    shape = np.load(manifest / "shape.npy")
    ys, xs = np.nonzero(shape)
    for v in js["views"]:
        rgba = read_image(out / v["path"], "RGBA")
        assert rgba.shape == (v["height"], v["width"], 4)
        # cropped to the product's bbox (the feathered edge may add a pixel) + 4 px padding
        x0, y0, x1, y1 = v["src_box"]
        assert (x1 - x0, y1 - y0) == (v["width"], v["height"])
        assert abs(x0 + 4 - xs.min()) <= 1 and abs(x1 - 4 - xs.max() - 1) <= 1
        assert abs(y0 + 4 - ys.min()) <= 1 and abs(y1 - 4 - ys.max() - 1) <= 1
        assert v["aspect"] == pytest.approx(v["width"] / v["height"], abs=1e-6)
        assert v["alpha_frac"] == pytest.approx(rgba[..., 3].mean() / 255, abs=1e-6)
        assert iou_with_shape(rgba, shape, v["src_box"]) > 0.97, v["view"]
        inside = rgba[..., 3] == 255
        if v["view"] == "view0":                                                      # colours kept as they were
            assert np.median(rgba[inside][:, :3], axis=0).tolist() == [40, 110, 60]
        assert (rgba[..., 3][:2] == 0).all() and (rgba[..., 3][:, :2] == 0).all()      # transparent padding
        assert inside[v["height"] // 2 - 5, v["width"] // 2]                          # the white label is filled
    rows = {r["item"]: r for r in read_jsonl(out / "rejects.jsonl")}
    assert sorted(rows) == ["prod00/view3", "prod00/view4", "prod00/view5", "prod00/view6", "prod00/view7"]
    assert all(r["stage"] == "products" for r in rows.values())
    assert rows["prod00/view3"]["reason"].startswith("unreadable image") and "not_an_image.png" in rows["prod00/view3"]["reason"]
    assert rows["prod00/view4"]["reason"].startswith("unreadable image") and "empty.png: empty file" in rows["prod00/view4"]["reason"]
    assert rows["prod00/view5"]["reason"].startswith("empty matte")
    assert "missing.png: no such file" in rows["prod00/view6"]["reason"]
    assert rows["prod00/view7"]["reason"].startswith("no background")
    assert not (out / "view3.png").exists()
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert run_cli(manifest / "manifest.json", "prod00", out).returncode == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first           # deterministic


def test_see_through_gap_stays_open_and_edges_are_exact():
    """A bag with a ring handle on pure white: the gap inside the handle is background, not product."""
    shape = np.zeros((H, W), np.uint8)
    cv2.rectangle(shape, (40, 80), (120, 140), 1, -1)
    cv2.circle(shape, (80, 80), 35, 1, 8)                      # handle: a ring; its inside shows the background
    shape = shape.astype(bool)
    rgb = np.full((H, W, 3), 255, np.uint8)
    rgb[shape] = (150, 30, 30)
    # anti-aliased edge: a half-covered column left of the body, a 20 % covered column right of it
    rgb[80:141, 39] = np.rint(0.5 * np.array([150, 30, 30]) + 0.5 * 255).astype(np.uint8)
    rgb[80:141, 121] = np.rint(0.2 * np.array([150, 30, 30]) + 0.8 * 255).astype(np.uint8)
    backend = P.WhiteMatting(P.validate_params(PARAMS))
    alpha = backend.matte(rgb)
    got = alpha > 127
    assert not got[70, 80] and not got[60, 80]                 # inside the handle: transparent
    assert got[100, 80] and got[80 - 35, 80]                   # body and handle: opaque
    assert got[100, 39] and not got[100, 121]                  # >= 1/2 covered kept, 1/5 covered dropped
    truth = shape.copy()
    truth[80:141, 39] = True
    assert (got & truth).sum() / (got | truth).sum() > 0.98
    # a gap that is small or not background-coloured is filled (highlight, label)
    rgb2 = rgb.copy()
    rgb2[100:104, 60:64] = 255                                 # small specular highlight
    rgb2[110:130, 90:110] = 244                                # off-white label
    got2 = backend.matte(rgb2) > 127
    assert got2[101, 61] and got2[120, 100] and not got2[70, 80]


def test_product_without_usable_view_is_rejected(manifest, tmp_path):
    out = tmp_path / "prod01"
    res = run_cli(manifest / "manifest.json", "prod01", out)
    assert res.returncode == 0, res.stderr
    js = read_json(out / "product.json")
    assert js["status"] == "rejected" and js["views"] == [] and "unreadable image" in js["reason"]
    assert len(read_jsonl(out / "rejects.jsonl")) == 2


def test_unknown_product_is_a_usage_error(manifest, tmp_path):
    res = run_cli(manifest / "manifest.json", "prod99", tmp_path / "x")
    assert res.returncode != 0 and "prod99" in res.stderr and "manifest.json" in res.stderr
    assert not (tmp_path / "x").exists()


def test_rembg_backend_needs_local_weights_and_package(manifest, tmp_path):
    missing = tmp_path / "models" / "rembg" / "u2net.onnx"
    params = {"products": {**PARAMS["products"], "backend": "rembg", "rembg_model": str(missing)}}
    with pytest.raises(P.BackendError, match="dvc pull models/rembg") as e:
        P.get_backend(P.validate_params(params))
    assert str(missing) in str(e.value)
    res = run_cli(manifest / "manifest.json", "prod00", tmp_path / "out", params)
    assert res.returncode != 0 and str(missing) in res.stderr and "dvc pull models/rembg" in res.stderr
    assert not (tmp_path / "out").exists()
    if importlib.util.find_spec("rembg") is None:
        missing.parent.mkdir(parents=True)
        missing.write_bytes(b"not really onnx")
        with pytest.raises(P.BackendError, match="rembg package"):
            P.get_backend(P.validate_params(params))


def test_helpers_and_params():
    m = np.zeros((20, 20), bool)
    m[4:16, 4:16] = True
    m[8:12, 8:12] = False
    assert P.fill_holes(m)[8:12, 8:12].all() and not P.fill_holes(m)[0].any()
    k = np.zeros((30, 30), bool)
    k[0:10, 0:10] = True        # 100
    k[20:25, 20:25] = True      # 25 (>= 10 %): kept
    k[28, 0] = True             # 1: dropped
    kept = P.keep_large_components(k, 0.1)
    assert kept[0:10, 0:10].all() and kept[20:25, 20:25].all() and not kept[28, 0]
    rgb = np.full((10, 10, 3), 255, np.uint8)
    a = np.zeros((10, 10), np.uint8)
    a[0:3, 5:8] = 255
    c, box = P.cutout(rgb, a, 2)
    assert box == [3, -2, 10, 5] and c.shape == (7, 7, 4) and c[2:5, 2:5, 3].min() == 255 and c[..., 3].sum() == 9 * 255
    assert P.cutout(rgb, np.zeros((10, 10), np.uint8), 2) is None
    for key, val in [("backend", "birefnet"), ("white_threshold", 0), ("feather", -1), ("pad", 1.5),
                     ("rembg_model", ""), ("max_alpha_frac", 0), ("open_hole_min_frac", -1),
                     ("hole_bg_tolerance", 300), ("min_component_frac", 2)]:
        with pytest.raises(ValueError, match=f"products.{key}"):
            P.validate_params({"products": {key: val}})
