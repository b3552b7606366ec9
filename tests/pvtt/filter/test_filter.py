"""Filter L1/L2 on tiny composites: a clean one is kept, corrupted ones are rejected for the right reason."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from genbuild.io.jsonio import read_json, read_jsonl, write_json
from genbuild.io.masks import save_masks
from genbuild.io.video import write_video
from pvtt.filter import filter as filters

ROOT = Path(__file__).resolve().parents[3]
PARAMS = {"filter": {"l1": {"min_bg_ssim": 0.85, "min_presence": 0.9},
                     "l2": {"max_warp_error": 0.08, "min_sharpness_ratio": 0.3}}}
N, H, W = 16, 64, 96


def _texture(rng, h, w, scale=4):
    small = rng.integers(0, 256, size=(h // scale + 2, w // scale + 2, 3), dtype=np.uint8)
    big = cv2.resize(small, ((w // scale + 2) * scale, (h // scale + 2) * scale), interpolation=cv2.INTER_CUBIC)
    return big[:h, :w]


def _scene(seed=0):
    """Source clip, background, old/new product masks and a clean composite (camera pans 1 px/frame)."""
    rng = np.random.default_rng(seed)
    canvas = _texture(rng, H, W + N + 4, scale=6)
    old_tex = _texture(rng, 22, 18, scale=2)
    new_tex = _texture(rng, 26, 16, scale=2)
    bg, src, edt = [], [], []
    old_m = np.zeros((N, H, W), bool)
    new_m = np.zeros((N, H, W), bool)
    for t in range(N):
        b = canvas[:, t:t + W].copy()
        x, y = 30 + t, 20
        s = b.copy()
        s[y:y + 22, x:x + 18] = old_tex
        old_m[t, y:y + 22, x:x + 18] = True
        e = b.copy()
        e[y - 2:y + 24, x + 1:x + 17] = new_tex
        new_m[t, y - 2:y + 24, x + 1:x + 17] = True
        bg.append(b), src.append(s), edt.append(e)
    return np.stack(src), np.stack(bg), old_m, new_m, np.stack(edt)


def make_work(tmp: Path, variants: dict[str, str], seed=0) -> dict:
    """Build work/{clips,masks,products,pairs,synth} for one video and one shard; variants: pair id -> kind."""
    src, bg, old_m, new_m, clean = _scene(seed)
    work = tmp / "work"
    clip_rel, mask_rel = "clips/vid000/vid000_s00c0.mp4", "masks/vid000/vid000_s00c0.npy.gz"
    write_video(work / clip_rel, src, fps=24)
    save_masks(work / mask_rel, old_m)
    ref = np.zeros((26, 16, 4), np.uint8)
    ref[..., :3], ref[..., 3] = 200, 255
    (work / "products/prod01").mkdir(parents=True)
    cv2.imwrite(str(work / "products/prod01/view0.png"), ref)
    synth_dir = work / "synth/shard-0000"
    pairs, status = [], {}
    for pid, kind in sorted(variants.items()):
        edt, nm = clean.copy(), new_m.copy()
        if kind == "bgchange":
            edt[:, :, :40] = 255 - edt[:, :, :40]
        elif kind == "flicker":
            edt = np.clip(edt.astype(int) + np.where(np.arange(N) % 2, 35, -35)[:, None, None, None], 0, 255).astype(np.uint8)
        elif kind == "absent":
            nm[N // 2:] = False
            edt[N // 2:] = np.where(old_m[N // 2:, ..., None], bg[N // 2:], edt[N // 2:])
        elif kind == "blur":
            for t in range(N):
                edt[t] = np.where(nm[t][..., None], cv2.GaussianBlur(edt[t], (0, 0), 3), edt[t])
        elif kind == "short":
            edt = edt[:-3]
        write_video(synth_dir / pid / "edited.mp4", edt, fps=24)
        save_masks(synth_dir / pid / "mask.npy.gz", nm)
        write_json(synth_dir / pid / "meta.json", {"pair": pid})
        status[pid] = {"status": "ok"}
        pairs.append({"id": pid, "clip": "vid000_s00c0", "video": "vid000", "shot": 0, "product": "prod01",
                      "view": 0, "source_product": "vid000", "category_from": "watch", "category_to": "bottle",
                      "clip_path": clip_rel, "mask_path": mask_rel, "background_path": "backgrounds/x.mp4",
                      "reference_path": "products/prod01/view0.png", "caption": f"caption of {pid}"})
    status["never_made"] = {"status": "rejected", "reason": "x"}
    write_json(synth_dir / "synth.json", {"shard": 0, "pairs": status})
    write_json(work / "pairs/shard-0000.json", {"shard": 0, "pairs": pairs})
    return {"work": work, "pairs": work / "pairs/shard-0000.json", "synth": synth_dir}


@pytest.fixture(scope="module")
def filtered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("filter")
    w = make_work(tmp, {"p_clean": "clean", "p_bg": "bgchange", "p_flicker": "flicker", "p_absent": "absent",
                        "p_blur": "blur", "p_short": "short"})
    out = w["work"] / "filter/shard-0000"
    doc = filters.run(PARAMS, w["work"], w["pairs"], w["synth"], out)
    return w, out, doc


def test_clean_kept(filtered):
    _, out, doc = filtered
    s = doc["pairs"]["p_clean"]
    assert s["kept"] and s["reasons"] == []
    assert s["l1"]["bg_ssim"] > 0.95 and s["l1"]["presence"] == 1.0
    assert s["l2"]["warp_error"] < 0.08 and 0.5 < s["l2"]["sharpness_ratio"] < 2.0
    assert read_json(out / "scores.json") == doc


def test_background_change_rejected_by_l1(filtered):
    _, _, doc = filtered
    s = doc["pairs"]["p_bg"]
    assert not s["kept"] and not s["l1"]["pass"]
    assert s["reasons"][0].startswith("l1: bg_ssim ") and "< 0.85" in s["reasons"][0]


def test_flicker_rejected_by_l2_only(filtered):
    _, _, doc = filtered
    s = doc["pairs"]["p_flicker"]
    assert s["l1"]["pass"], s
    assert not s["l2"]["pass"] and not s["kept"]
    assert any(r.startswith("l2: warp_error ") for r in s["reasons"])


def test_presence_and_sharpness(filtered):
    _, _, doc = filtered
    a = doc["pairs"]["p_absent"]
    assert a["l1"]["presence"] == 0.5 and any(r.startswith("l1: presence 0.5000 < 0.9") for r in a["reasons"])
    b = doc["pairs"]["p_blur"]
    assert b["l1"]["pass"] and not b["l2"]["pass"]
    assert any(r.startswith("l2: sharpness_ratio") for r in b["reasons"])


def test_rejects_file(filtered):
    _, out, doc = filtered
    rows = read_jsonl(out / "rejects.jsonl")
    by_item = {r["item"]: r for r in rows}
    assert set(by_item) == {"p_bg", "p_flicker", "p_absent", "p_blur", "p_short"}
    assert all(r["stage"] == "filter" for r in rows)
    assert by_item["p_bg"]["reason"].startswith("l1:")
    assert by_item["p_flicker"]["reason"].startswith("l2:")
    assert by_item["p_short"]["reason"].startswith("error: edited video has 13 frames")
    assert "p_short" not in doc["pairs"] and "never_made" not in doc["pairs"]


def test_invalid_params_name_key(tmp_path):
    bad = json.loads(json.dumps(PARAMS))
    bad["filter"]["l1"]["min_presence"] = 1.5
    with pytest.raises(ValueError, match="filter.l1.min_presence"):
        filters.thresholds(bad)
    bad["filter"]["l1"]["min_presence"] = 0.9
    del bad["filter"]["l2"]["max_warp_error"]
    with pytest.raises(ValueError, match="filter.l2.max_warp_error"):
        filters.thresholds(bad)
    bad["filter"]["l2"]["max_warp_error"] = True
    with pytest.raises(ValueError, match="filter.l2.max_warp_error"):
        filters.thresholds(bad)


def test_cli_deterministic(filtered, tmp_path):
    w, out, _ = filtered
    out2 = tmp_path / "again"
    cmd = [sys.executable, str(ROOT / "scripts/filter.py"), "--params", json.dumps(PARAMS), "--work", str(w["work"]),
           "--pairs", str(w["pairs"]), "--synth", str(w["synth"]), "--out", str(out2)]
    subprocess.run(cmd, check=True, capture_output=True)
    for name in ("scores.json", "rejects.jsonl"):
        assert (out2 / name).read_bytes() == (out / name).read_bytes()
