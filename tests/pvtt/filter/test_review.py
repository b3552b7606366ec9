"""L3 review: deterministic sample, self-contained sheet, template, verdicts read back."""
from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from genbuild.io.jsonio import read_json, read_jsonl, write_json
from genbuild.io.masks import save_masks
from genbuild.io.video import write_png, write_video
from pvtt.filter import review

ROOT = Path(__file__).resolve().parents[3]
PARAMS = {"seed": 1234, "filter": {"l3": {"review_fraction": 0.25, "verdicts": "review/verdicts.csv"}}}
N, H, W = 8, 36, 64


def _scores(kept: bool) -> dict:
    return {"l1": {"bg_ssim": 0.96, "presence": 1.0, "pass": kept},
            "l2": {"warp_error": 0.02, "sharpness_ratio": 1.1, "pass": True}, "kept": kept,
            "reasons": [] if kept else ["l1: bg_ssim 0.5 < 0.85"]}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Two shards of 6 pairs each (one per shard not kept); every pair shares its video's clip."""
    tmp = tmp_path_factory.mktemp("review")
    work = tmp / "work"
    rng = np.random.default_rng(3)
    ref = np.zeros((24, 16, 4), np.uint8)
    ref[..., 0], ref[4:20, 3:13, 3] = 180, 255
    write_png(work / "products/prod01/view0.png", ref)
    for s in range(2):
        shard = f"shard-{s:04d}"
        vid = f"vid{s:03d}"
        small = rng.integers(0, 255, (N, H // 6, W // 8, 3), dtype=np.uint8)
        frames = np.stack([cv2.resize(f, (W, H), interpolation=cv2.INTER_CUBIC) for f in small])
        write_video(work / f"clips/{vid}/{vid}_s00c0.mp4", frames, fps=24)
        save_masks(work / f"masks/{vid}/{vid}_s00c0.npy.gz", np.zeros((N, H, W), bool))
        pairs, scores = [], {}
        for i in range(6):
            pid = f"{vid}_s00c0__prod01_v{i}"
            write_video(work / f"synth/{shard}/{pid}/edited.mp4", 255 - frames, fps=24)
            pairs.append({"id": pid, "clip": f"{vid}_s00c0", "video": vid, "shot": 0, "product": "prod01", "view": i,
                          "source_product": "x", "category_from": "watch", "category_to": "bottle",
                          "clip_path": f"clips/{vid}/{vid}_s00c0.mp4", "mask_path": f"masks/{vid}/{vid}_s00c0.npy.gz",
                          "background_path": "b.mp4", "reference_path": "products/prod01/view0.png",
                          "caption": f"<b>bottle</b> & watch {i}"})
            scores[pid] = _scores(i != 5)
        write_json(work / f"pairs/{shard}.json", {"shard": s, "pairs": pairs})
        write_json(work / f"filter/{shard}/scores.json", {"shard": s, "pairs": scores})
    return work


def _filters(work):
    return [work / "filter/shard-0001", work / "filter/shard-0000"]


def test_sampling_deterministic():
    ids = [f"p{i:02d}" for i in range(20)]
    a = review.sample_for_review(ids, 1234, 0.1)
    assert a == review.sample_for_review(list(reversed(ids)), 1234, 0.1) and len(a) == 2 and a == sorted(a)
    assert len(review.sample_for_review(ids[:3], 1234, 0.1)) == 1
    assert len(review.sample_for_review(ids[:3], 1234, 0.0)) == 1
    assert review.sample_for_review([], 1234, 0.1) == []
    assert len(review.sample_for_review(ids, 1234, 0.3)) == 6
    assert len({tuple(review.sample_for_review(ids, seed, 0.1)) for seed in range(6)}) > 1
    ranked = sorted(ids, key=lambda p: review.rank_key(1234, p))
    assert a == sorted(ranked[:2])


def test_sheet_template_and_pending(work, tmp_path):
    out = tmp_path / "rev"
    d = review.run(PARAMS, work, _filters(work), out, verdicts=str(tmp_path / "missing.csv"))
    kept = [f"vid{s:03d}_s00c0__prod01_v{i}" for s in range(2) for i in range(5)]
    assert d["kept_before_review"] == 10 and len(d["sampled"]) == 3 and set(d["sampled"]) <= set(kept)
    assert d["verdicts_file"] is None and d["pending"] == d["sampled"] and d["rejected"] == d["accepted"] == []
    assert read_json(out / "decisions.json") == d
    assert (out / "verdicts_template.csv").read_text() == "pair_id,verdict,notes\n" + "".join(
        f"{p},,\n" for p in d["sampled"])
    assert read_jsonl(out / "rejects.jsonl") == []
    sheet = (out / "sheet.html").read_text()
    for pid in d["sampled"]:
        assert pid in sheet
    assert "&lt;b&gt;bottle&lt;/b&gt; &amp; watch" in sheet and "<b>bottle</b>" not in sheet
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', sheet)
    assert len(imgs) == 3 * len(d["sampled"])  # source strip, edited strip, reference
    strip = Image.open(io.BytesIO(base64.b64decode(imgs[0])))
    assert strip.height == review.THUMB_HEIGHT and strip.width > 3 * review.THUMB_HEIGHT
    assert "accept" in sheet and "reject" in sheet and "verdicts_template.csv" in sheet
    assert "http" not in sheet.replace("http-equiv", "") and "cannot show" not in sheet
    # rerun gives the same bytes
    out2 = tmp_path / "rev2"
    review.run(PARAMS, work, list(reversed(_filters(work))), out2, verdicts=str(tmp_path / "missing.csv"))
    for name in ("sheet.html", "verdicts_template.csv", "rejects.jsonl"):
        assert (out / name).read_bytes() == (out2 / name).read_bytes()


def test_verdicts_read_back(work, tmp_path):
    d0 = review.run(PARAMS, work, _filters(work), tmp_path / "r0", verdicts=str(tmp_path / "none.csv"))
    s = d0["sampled"]
    other_kept = "vid001_s00c0__prod01_v4" if "vid001_s00c0__prod01_v4" not in s else "vid001_s00c0__prod01_v3"
    csv = tmp_path / "verdicts.csv"
    csv.write_text("pair_id,verdict,notes\n"
                   f"{s[0]}, Reject ,\"logo wrong, blurry\"\n"
                   f"{s[1]},accept,\n"
                   f"{s[2]},,\n"
                   f"{other_kept},reject,spotted elsewhere\n"
                   "vid000_s00c0__prod01_v5,reject,not kept anyway\n")
    out = tmp_path / "r1"
    d = review.run(PARAMS, work, _filters(work), out, verdicts=str(csv))
    assert d["sampled"] == s and d["verdicts_file"] == str(csv)
    assert d["rejected"] == sorted([s[0], other_kept]) and d["accepted"] == [s[1]] and d["pending"] == [s[2]]
    assert d["unmatched"] == ["vid000_s00c0__prod01_v5"]
    rows = read_jsonl(out / "rejects.jsonl")
    assert [(r["stage"], r["item"], r["reason"]) for r in rows] == [("review", p, "l3: human verdict reject")
                                                                  for p in d["rejected"]]
    assert {r["item"]: r["notes"] for r in rows}[s[0]] == "logo wrong, blurry"


def test_unknown_verdict_names_row(work, tmp_path):
    csv = tmp_path / "verdicts.csv"
    csv.write_text("pair_id,verdict,notes\nvid000_s00c0__prod01_v0,accept,\nvid000_s00c0__prod01_v1,maybe,\n")
    out = tmp_path / "r"
    with pytest.raises(ValueError, match=r"row 3 \(pair_id vid000_s00c0__prod01_v1\).*'maybe'"):
        review.run(PARAMS, work, _filters(work), out, verdicts=str(csv))
    assert not out.exists()
    csv.write_text("pair,verdict\nx,accept\n")
    with pytest.raises(ValueError, match="pair_id"):
        review.read_verdicts(csv)
    csv.write_text("pair_id,verdict\nx,accept\nx,reject\n")
    with pytest.raises(ValueError, match="row 3"):
        review.read_verdicts(csv)


def test_invalid_params(work, tmp_path):
    bad = json.loads(json.dumps(PARAMS))
    bad["filter"]["l3"]["review_fraction"] = 2
    with pytest.raises(ValueError, match="filter.l3.review_fraction"):
        review.run(bad, work, _filters(work), tmp_path / "x")
    with pytest.raises(ValueError, match="'seed'"):
        review.run({"filter": PARAMS["filter"]}, work, _filters(work), tmp_path / "x")


def test_cli_uses_params_verdicts_path(work, tmp_path):
    d0 = review.run(PARAMS, work, _filters(work), tmp_path / "r0", verdicts=str(tmp_path / "none.csv"))
    (tmp_path / "review").mkdir()
    (tmp_path / "review/verdicts.csv").write_text(f"pair_id,verdict,notes\n{d0['sampled'][1]},reject,\n")
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "scripts/review.py"), "--params", json.dumps(PARAMS), "--work", str(work),
           "--filter", *map(str, _filters(work)), "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, cwd=tmp_path)
    d = read_json(out / "decisions.json")
    assert d["verdicts_file"] == "review/verdicts.csv" and d["rejected"] == [d0["sampled"][1]]
