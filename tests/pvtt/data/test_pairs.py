"""Pairs stage: rationality filter, deterministic selection, sharding."""
from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genbuild.io.jsonio import read_json, read_jsonl, write_json
from genbuild.io.masks import save_masks
from genbuild.io.video import write_png
from pvtt.data import pairs as P

ROOT = Path(__file__).resolve().parents[3]

PAIRS = {
    "expected_clips_per_video": 4,
    "products_per_clip": 3,
    "pairs_per_shard": 32,
    "max_aspect_change": 2.5,
    "compatible": {
        "watch": ["watch", "bottle", "box", "bag"],
        "bottle": ["bottle", "watch", "box", "bag"],
        "box": ["box", "bag", "bottle", "watch"],
        "bag": ["bag", "box", "bottle", "watch"],
    },
}
PARAMS = {"seed": 1234, "pairs": PAIRS, "data": {"videos_per_job": 100}}  # every video in batch b0000

SCHEMA = """
CREATE TABLE clips(id TEXT PRIMARY KEY, video TEXT, shot INT, path TEXT, n_frames INT, fps REAL, width INT, height INT);
CREATE TABLE videos(id TEXT PRIMARY KEY, status TEXT, category TEXT, caption TEXT, product_id TEXT);
CREATE TABLE products(id TEXT PRIMARY KEY, status TEXT, category TEXT, name TEXT, caption TEXT);
CREATE TABLE views(product TEXT, view TEXT, path TEXT, width INT, height INT, aspect REAL, status TEXT);
"""

# id, status, category, name, caption
PRODUCTS = [
    ("prod_watch", "ok", "watch", "Watch", "a silver wrist watch"),
    ("prod_bottle", "ok", "bottle", "Bottle", "a green glass bottle"),
    ("prod_bag", "ok", "bag", "Bag", "a red leather bag"),
    ("prod_box", "ok", "box", "Box", "a blue gift box"),
    ("prod_shoe", "ok", "shoe", "Shoe", "a white sneaker"),       # not replaceable into watch/bottle
    ("prod_broken", "failed", "box", "Broken", "never used"),     # product not ok
]
# product, view, (w, h), status
VIEWS = [
    ("prod_watch", "view0", (40, 40), "ok"),
    ("prod_watch", "view1", (44, 40), "ok"),
    ("prod_bottle", "view0", (30, 40), "ok"),
    ("prod_bottle", "view1", (32, 40), "ok"),
    ("prod_bag", "view0", (40, 36), "ok"),
    ("prod_bag", "view1", (120, 10), "ok"),       # extreme aspect (12:1)
    ("prod_box", "view0", (36, 40), "ok"),
    ("prod_box", "view1", (36, 40), "failed"),    # view not ok
    ("prod_shoe", "view0", (40, 30), "ok"),
    ("prod_broken", "view0", (40, 40), "ok"),
]
# id, status, category, caption, product_id
VIDEOS = [
    ("vid000", "ok", "watch", "a watch turns on a table", "prod_watch"),
    ("vid001", "ok", "bottle", "a bottle in a studio", "prod_bottle"),
    ("vid002", "failed", "bag", "never ingested", "prod_bag"),
]
# clip id, video, shot, kept, bbox per frame (None = empty)
CLIPS = [
    ("vid000_s00c0", "vid000", 0, True),
    ("vid000_s01c0", "vid000", 1, False),      # failed mask QC: never paired
    ("vid001_s00c0", "vid001", 0, True),
    ("vid001_s01c0", "vid001", 1, True),       # its background is missing -> reject
]


def make_work(root: Path, with_products: list | None = None) -> Path:
    """A tiny work dir: SQLite index, product PNGs, mask/QC JSON, masks and (dummy) backgrounds."""
    work = root / "work"
    work.mkdir(parents=True)
    conn = sqlite3.connect(work / "index.sqlite")
    conn.executescript(SCHEMA)
    prods = PRODUCTS if with_products is None else [p for p in PRODUCTS if p[0] in with_products]
    conn.executemany("INSERT INTO products VALUES (?,?,?,?,?)", prods)
    conn.executemany("INSERT INTO videos VALUES (?,?,?,?,?)", VIDEOS)
    for prod, view, (w, h), status in VIEWS:
        rel = f"products/{prod}/{view}.png"
        rgba = np.zeros((h, w, 4), np.uint8)
        rgba[..., 0] = 200
        rgba[..., 3] = 255
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        write_png(work / rel, rgba)
        conn.execute("INSERT INTO views VALUES (?,?,?,?,?,?,?)", (prod, view, rel, w, h, w / h, status))
    n = 6
    per_video: dict[str, dict] = {}
    for cid, vid, shot, kept in CLIPS:
        conn.execute("INSERT INTO clips VALUES (?,?,?,?,?,?,?,?)",
                     (cid, vid, shot, f"clips/{vid}/{cid}.mp4", n, 24.0, 32, 24))
        m = np.zeros((n, 24, 32), bool)
        m[:, 6:18, 10:22] = True                                   # 12x12: aspect 1
        save_masks(work / "masks" / "b0000" / vid / f"{cid}.npy.gz", m)
        bg = work / "backgrounds" / "b0000" / vid / f"{cid}.mp4"
        if cid != "vid001_s01c0":
            bg.parent.mkdir(parents=True, exist_ok=True)
            bg.write_bytes(b"placeholder: pairs only checks presence")
        v = per_video.setdefault(vid, {"qc": {}, "masks": {}})
        v["qc"][cid] = {"kept": kept}
        v["masks"][cid] = {"n_frames": n, "area_frac": [0.19] * n, "bbox": [[10, 6, 22, 18]] * (n - 1) + [None]}
    conn.commit()
    conn.close()
    for vid, v in per_video.items():
        write_json(work / "maskqc" / "b0000" / vid / "qc.json", {"video": vid, "clips": v["qc"]})
        write_json(work / "masks" / "b0000" / vid / "masks.json", {"video": vid, "clips": v["masks"]})
    return work


def all_pairs(out: Path, s: int) -> list[dict]:
    return [p for i in range(s) for p in read_json(out / f"shard-{i:04d}.json")["pairs"]]


def test_num_shards_formula():
    assert P.num_shards(PAIRS, 0) == 1
    assert P.num_shards(PAIRS, 1) == 1                 # 12 / 32 -> 1
    assert P.num_shards(PAIRS, 8) == 3                 # 96 / 32
    assert P.num_shards(PAIRS, 9) == 4                 # 108 / 32 -> ceil 3.375
    assert P.num_shards(PAIRS, 500) == 188             # 6000 / 32 -> 187.5
    assert P.num_shards({**PAIRS, "pairs_per_shard": 1}, 2) == 24


@pytest.mark.parametrize("key,value", [("pairs_per_shard", 0), ("products_per_clip", "3"),
                                       ("max_aspect_change", 0.5), ("compatible", {"watch": "bottle"}),
                                       ("expected_clips_per_video", None)])
def test_invalid_params_name_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        P.num_shards({**PAIRS, key: value}, 3)
    bad = dict(PAIRS)
    del bad["max_aspect_change"]
    with pytest.raises(ValueError, match="pairs.max_aspect_change"):
        P.num_shards(bad, 3)


def test_filter_selection_and_outputs(tmp_path):
    work = make_work(tmp_path)
    out = work / "pairs"
    P.main(["--params", json.dumps(PARAMS), "--work", str(work), "--videos", "vid001", "vid000", "vid002",
            "--num-shards", "4", "--out", str(out)])
    names = sorted(p.name for p in out.iterdir())
    assert names == ["rejects.jsonl", "shard-0000.json", "shard-0001.json", "shard-0002.json",
                     "shard-0003.json", "summary.json"]
    pairs = all_pairs(out, 4)
    summary = read_json(out / "summary.json")

    # Kept clips: vid000_s00c0 and vid001_s00c0 (vid001_s01c0 lacks a background, s01c0 of vid000 failed QC).
    assert sorted({p["clip"] for p in pairs}) == ["vid000_s00c0", "vid001_s00c0"]
    # Usable views: watch x2, bottle x2, bag x2, box x1, shoe x1 (broken product and failed view excluded).
    # Per clip: 8 views minus the own product's 2 -> 6 candidates; shoe incompatible; bag view1 12:1 aspect.
    assert summary["candidates"] == 12
    assert summary["own_product_excluded"] == 4
    assert summary["rejected_by_reason"] == {"aspect_change": 2, "incompatible_category": 2, "view": 0}
    assert summary["rational"] == 8
    assert summary["kept"] == len(pairs) == 6           # 3 products per clip
    assert summary["num_shards"] == 4 and sum(summary["per_shard"]) == 6
    assert summary["per_shard"] == [len(read_json(out / f"shard-{i:04d}.json")["pairs"]) for i in range(4)]

    for p in pairs:
        assert set(p) == set(P.PAIR_FIELDS)
        assert p["product"] != p["source_product"]                       # own product never paired
        assert p["product"] not in ("prod_shoe", "prod_broken")
        assert (p["product"], p["view"]) not in (("prod_bag", "view1"), ("prod_box", "view1"))
        assert p["id"] == f"{p['clip']}__{p['product']}_{p['view']}"
        assert P.shard_of(p["id"], 4) == int(hashlib.sha256(p["id"].encode()).hexdigest()[:8], 16) % 4
        assert p["category_to"] in PAIRS["compatible"][p["category_from"]]
        for k in ("clip_path", "mask_path", "background_path", "reference_path"):
            assert not Path(p[k]).is_absolute()
        assert (work / p["reference_path"]).is_file() and (work / p["background_path"]).is_file()
        assert p["caption"].startswith(f"Replace the {p['category_from']} with ")
    by_clip = {}
    for p in pairs:
        by_clip.setdefault(p["clip"], []).append(p["product"])
    for prods in by_clip.values():
        assert len(prods) == len(set(prods)) == 3                        # one view per product
    p0 = next(p for p in pairs if p["clip"] == "vid000_s00c0")
    assert p0["source_product"] == "prod_watch" and p0["category_from"] == "watch" and p0["video"] == "vid000"
    assert p0["caption"].endswith("; a watch turns on a table")
    for i in range(4):
        ids = [p["id"] for p in read_json(out / f"shard-{i:04d}.json")["pairs"]]
        assert ids == sorted(ids)
        assert read_json(out / f"shard-{i:04d}.json")["shard"] == i

    rej = read_jsonl(out / "rejects.jsonl")
    reasons = {(r["item"], r["reason"]) for r in rej}
    assert ("vid001_s01c0", "missing_background") in reasons
    assert ("vid002", "video_not_ok") in reasons
    assert all(r["stage"] == "pairs" for r in rej)
    assert not any(r["item"] == "vid000_s01c0" for r in rej)             # QC failure is not re-rejected here


def test_view_rule_counts_its_reason(tmp_path):
    """Only front views allowed: every view1 candidate that passed the category rule is counted
    under "view" (checked before the aspect, so bag view1 counts there, not as aspect_change)."""
    work = make_work(tmp_path)
    out = work / "pairs"
    params = {**PARAMS, "pairs": {**PAIRS, "allowed_views": ["view0"]}}
    P.main(["--params", json.dumps(params), "--work", str(work), "--videos", "vid000", "vid001",
            "--num-shards", "2", "--out", str(out)])
    summary = read_json(out / "summary.json")
    # Per clip the compatible candidates are 6 - 1 shoe = 5; of them view1: 2 (watch clip: bottle, bag)
    # and 2 (bottle clip: watch, bag).
    assert summary["rejected_by_reason"] == {"aspect_change": 0, "incompatible_category": 2, "view": 4}
    assert {p["view"] for p in all_pairs(out, 2)} == {"view0"}
    with pytest.raises(ValueError, match="pairs.allowed_views"):
        P.validate_pairs_params({**PAIRS, "allowed_views": []})


def test_deterministic_and_every_shard_written(tmp_path):
    work = make_work(tmp_path)
    args = ["--params", json.dumps(PARAMS), "--work", str(work), "--videos", "vid000", "vid001"]
    P.main(args + ["--num-shards", "7", "--out", str(work / "a")])
    # Same inputs, other video order, through the thin script in a fresh interpreter.
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "pairs.py"), "--params", json.dumps(PARAMS),
                          "--work", str(work), "--videos", "vid001", "vid000", "--num-shards", "7",
                          "--out", str(work / "b")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    files = sorted(p.name for p in (work / "a").iterdir())
    assert files == sorted(p.name for p in (work / "b").iterdir())
    assert [f"shard-{i:04d}.json" for i in range(7)] == [f for f in files if f.startswith("shard-")]
    for f in files:
        assert (work / "a" / f).read_bytes() == (work / "b" / f).read_bytes(), f
    per_shard = read_json(work / "a" / "summary.json")["per_shard"]
    assert len(per_shard) == 7 and 0 in per_shard                        # 6 pairs in 7 shards: some empty

    # Another seed picks (possibly) other products, but still 3 per clip and deterministically.
    P.main(["--params", json.dumps({**PARAMS, "seed": 99}), "--work", str(work), "--videos", "vid000", "vid001",
            "--num-shards", "7", "--out", str(work / "c")])
    assert len(all_pairs(work / "c", 7)) == 6


def test_selection_stable_when_products_added(tmp_path):
    """Ranking by sha256(seed, clip, product): a product kept among fewer stays kept among more."""
    few = make_work(tmp_path / "few", with_products=["prod_watch", "prod_bottle", "prod_bag", "prod_box"])
    P.main(["--params", json.dumps({**PARAMS, "pairs": {**PAIRS, "products_per_clip": 1}}), "--work", str(few),
            "--videos", "vid000", "--num-shards", "1", "--out", str(few / "pairs")])
    many = make_work(tmp_path / "many")
    P.main(["--params", json.dumps({**PARAMS, "pairs": {**PAIRS, "products_per_clip": 1}}), "--work", str(many),
            "--videos", "vid000", "--num-shards", "1", "--out", str(many / "pairs")])
    a, b = all_pairs(few / "pairs", 1), all_pairs(many / "pairs", 1)
    assert len(a) == len(b) == 1 and a[0]["id"] == b[0]["id"]


def test_empty_and_missing_inputs(tmp_path):
    work = make_work(tmp_path)
    (work / "maskqc" / "b0000" / "vid001" / "qc.json").unlink()
    out = work / "pairs"
    P.main(["--params", json.dumps(PARAMS), "--work", str(work), "--videos", "vid001", "vid404",
            "--num-shards", "2", "--out", str(out)])
    assert all_pairs(out, 2) == []
    s = read_json(out / "summary.json")
    assert s["kept"] == 0 and s["per_shard"] == [0, 0]
    reasons = {(r["item"], r["reason"]) for r in read_jsonl(out / "rejects.jsonl")}
    assert reasons == {("vid001", "missing_mask_outputs"), ("vid404", "video_not_indexed")}
    with pytest.raises(FileNotFoundError, match="index"):
        P.build_pairs(tmp_path / "nowhere", ["vid000"], PARAMS, 1)
    with pytest.raises(ValueError, match="seed"):
        P.build_pairs(work, ["vid000"], {"pairs": PAIRS}, 1)
