"""Pack: reproducible WebDataset shards split by source video, L3 verdicts applied, card counts."""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from genbuild.io.jsonio import read_json, read_jsonl, write_json, write_jsonl
from genbuild.io.masks import load_masks, save_masks
from genbuild.io.video import write_png, write_video
from pvtt.filter import review
from pvtt.pack import pack

ROOT = Path(__file__).resolve().parents[3]
PARAMS = {"seed": 1234, "pack": {"samples_per_shard": 2, "val_fraction": 0.15, "benchmark_fraction": 0.15},
          "train_data": {"ignored": True}}
REVIEW_PARAMS = {"seed": 1234, "filter": {"l3": {"review_fraction": 0.5, "verdicts": "review/verdicts.csv"}}}
N, H, W = 6, 32, 48
VIDEOS = [f"vid{i:03d}" for i in range(5)]


def _scores(kept: bool, level: str | None = None) -> dict:
    l1 = {"bg_ssim": 0.97 if level != "l1" else 0.5, "presence": 1.0, "pass": level != "l1"}
    l2 = {"warp_error": 0.03 if level != "l2" else 0.2, "sharpness_ratio": 0.9, "pass": level != "l2"}
    reasons = [] if kept else [f"{level}: bad"]
    return {"l1": l1, "l2": l2, "kept": kept, "reasons": reasons}


def build_work(tmp: Path) -> dict:
    """5 videos x 1 clip x 2 products over 2 shards; one pair fails L1, one L2, the rest kept.
    The per-video stages' directories are work/<stage>/<batch>/<video> (all in batch b0000)."""
    work = tmp / "work"
    rng = np.random.default_rng(7)
    (work / "raw" / "b0001" / "vid099").mkdir(parents=True)
    write_jsonl(work / "raw" / "b0001" / "vid099" / "rejects.jsonl",
                [{"stage": "ingest", "item": "vid099", "reason": "decode failed: truncated"}])
    for _cat, prod in (("bottle", "prod01"), ("box", "prod02")):
        ref = np.zeros((20, 12, 4), np.uint8)
        ref[..., :3] = rng.integers(0, 255, 3)
        ref[2:18, 2:10, 3] = 255
        write_png(work / "products" / prod / "view0.png", ref)
    shards = {"shard-0000": [], "shard-0001": []}
    for v_i, vid in enumerate(VIDEOS):
        (work / "raw" / "b0000" / vid).mkdir(parents=True, exist_ok=True)
        clip = f"{vid}_s00c0"
        frames = rng.integers(0, 255, (N, H, W, 3), dtype=np.uint8)
        write_video(work / "clips" / "b0000" / vid / f"{clip}.mp4", frames, fps=24)
        old = np.zeros((N, H, W), bool)
        old[:, 4:14, 5 + v_i:15 + v_i] = True
        save_masks(work / "masks" / "b0000" / vid / f"{clip}.npy.gz", old)
        for prod, cat in (("prod01", "bottle"), ("prod02", "box")):
            pid = f"{clip}__{prod}.v0"
            shard = "shard-0000" if v_i % 2 == 0 else "shard-0001"
            shards[shard].append({
                "id": pid, "clip": clip, "video": vid, "shot": 0, "product": prod, "view": 0,
                "source_product": f"{vid}_obj", "category_from": "watch", "category_to": cat,
                "clip_path": f"clips/b0000/{vid}/{clip}.mp4", "mask_path": f"masks/b0000/{vid}/{clip}.npy.gz",
                "background_path": f"backgrounds/b0000/{vid}/{clip}.mp4", "reference_path": f"products/{prod}/view0.png",
                "caption": f"A {cat} replaces the watch in {vid}."})
    write_jsonl(work / "maskqc" / "b0000" / "vid003" / "rejects.jsonl",
                [{"stage": "maskqc", "item": "vid003_s01c0", "reason": "temporal_iou: 0.5 < 0.8"}])
    write_jsonl(work / "pairs" / "rejects.jsonl",
                [{"stage": "pairs", "item": "vid000_s00c0__prod09.v0", "reason": "category: bag -> shoe"}])
    bad = {"vid001_s00c0__prod01.v0": "l1", "vid002_s00c0__prod02.v0": "l2"}
    for shard, plist in shards.items():
        write_json(work / "pairs" / f"{shard}.json", {"shard": int(shard[-4:]), "pairs": plist})
        status, scores, frows = {}, {}, []
        for i, p in enumerate(plist):
            edited = rng.integers(0, 255, (N, H, W, 3), dtype=np.uint8)
            write_video(work / "synth" / shard / p["id"] / "edited.mp4", edited, fps=24)
            new = np.zeros((N, H, W), bool)
            new[:, 10:20, 20 + i:30 + i] = True
            save_masks(work / "synth" / shard / p["id"] / "mask.npy.gz", new)
            write_json(work / "synth" / shard / p["id"] / "meta.json", {"pair": p["id"]})
            status[p["id"]] = {"status": "ok"}
            level = bad.get(p["id"])
            scores[p["id"]] = _scores(level is None, level)
            if level:
                frows.append({"stage": "filter", "item": p["id"], "reason": f"{level}: bad"})
        status["never"] = {"status": "rejected"}
        write_json(work / "synth" / shard / "synth.json", {"shard": int(shard[-4:]), "pairs": status})
        write_jsonl(work / "synth" / shard / "rejects.jsonl",
                    [{"stage": "synth", "item": f"never-{shard}", "reason": "trajectory: too small"}])
        write_json(work / "filter" / shard / "scores.json", {"shard": int(shard[-4:]), "pairs": scores})
        write_jsonl(work / "filter" / shard / "rejects.jsonl", frows)
    return {"work": work, "shards": sorted(shards), "pairs": {p["id"]: p for v in shards.values() for p in v}}


def run_pack(w: dict, out: Path, review_dir: Path | None, params=PARAMS) -> dict:
    work = w["work"]
    return pack.run(params, work, work / "pairs", [work / "synth" / s for s in w["shards"]],
                    [work / "filter" / s for s in w["shards"]], review_dir, out)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pack")
    w = build_work(tmp)
    work = w["work"]
    # L3: reject one kept pair through a committed verdicts CSV
    decisions = review.run(REVIEW_PARAMS, work, [work / "filter" / s for s in w["shards"]], work / "review",
                           verdicts=None)
    victim = decisions["sampled"][0]
    verdicts = tmp / "verdicts.csv"
    verdicts.write_text(f"pair_id,verdict,notes\n{victim},reject,wrong product\n")
    decisions = review.run(REVIEW_PARAMS, work, [work / "filter" / s for s in w["shards"]], work / "review",
                           verdicts=str(verdicts))
    assert decisions["rejected"] == [victim]
    out = tmp / "dataset"
    card = run_pack(w, out, work / "review")
    return {**w, "out": out, "card": card, "victim": victim, "tmp": tmp}


def _files(d: Path) -> dict[str, bytes]:
    return {f.relative_to(d).as_posix(): f.read_bytes() for f in sorted(d.rglob("*")) if f.is_file()}


def test_byte_identical_rerun(built):
    again = built["tmp"] / "dataset-again"
    run_pack(built, again, built["work"] / "review")
    a, b = _files(built["out"]), _files(again)
    assert sorted(a) == sorted(b)
    assert {"card.json", "splits.json", "rejects.jsonl", "manifest.json"} <= set(a)
    for name in a:
        assert a[name] == b[name], name


def test_split_by_video(built):
    splits = read_json(built["out"] / "splits.json")
    assert set(splits) == {"train", "val", "benchmark"} and all(splits.values())
    video_split = {}
    for sp, keys in splits.items():
        for k in keys:
            vid = k.split("_")[0]
            assert video_split.setdefault(vid, sp) == sp, f"{vid} in two splits"
    # the split is a function of (seed, video) only
    assert pack.split_videos(VIDEOS, 1234, 0.15, 0.15) == pack.split_videos(list(reversed(VIDEOS)), 1234, 0.15, 0.15)
    sv = pack.split_videos([f"v{i}" for i in range(20)], 1234, 0.15, 0.15)
    assert sorted(list(sv.values()).count(s) for s in ("benchmark", "val")) == [3, 3]
    assert set(pack.split_videos(["a", "b", "c"], 5, 0.15, 0.15).values()) == {"train", "val", "benchmark"}
    assert set(pack.split_videos(["a"], 5, 0.15, 0.15).values()) == {"train"}


def test_shards_and_samples(built):
    out, pairs = built["out"], built["pairs"]
    splits = read_json(out / "splits.json")
    kept = sorted(pack.sample_key(p) for p in pairs
                  if p not in ("vid001_s00c0__prod01.v0", "vid002_s00c0__prod02.v0", built["victim"]))
    assert sorted(k for ks in splits.values() for k in ks) == kept
    assert pack.sample_key(built["victim"]) not in kept
    seen = {}
    for tar in sorted((out / "shards").glob("*.tar")):
        split = tar.name.split("-")[0]
        samples = list(pack.iter_samples(tar))
        assert 1 <= len(samples) <= 2
        for s in samples:
            assert "." not in s["key"]
            pid = s["meta"]["id"]
            pair = pairs[pid]
            assert s["meta"]["split"] == split and s["meta"]["key"] == s["key"]
            assert s["meta"]["scores"]["l1"]["pass"] and s["meta"]["scores"]["l2"]["pass"]
            work = built["work"]
            assert s["source"] == (work / pair["clip_path"]).read_bytes()
            assert s["reference"] == (work / pair["reference_path"]).read_bytes()
            shard = "shard-0000" if pair["video"] in ("vid000", "vid002", "vid004") else "shard-0001"
            assert s["edited"] == (work / "synth" / shard / pid / "edited.mp4").read_bytes()
            union = load_masks(work / pair["mask_path"]) | load_masks(work / "synth" / shard / pid / "mask.npy.gz")
            assert s["mask"].dtype == np.uint8 and s["mask"].shape == (N, H, W)
            assert np.array_equal(s["mask"], union.astype(np.uint8)) and set(np.unique(s["mask"])) == {0, 1}
            assert s["caption"] == pair["caption"]
            seen[s["key"]] = split
        with tarfile.open(tar) as t:
            names = t.getnames()
            assert names == sorted(names, key=lambda n: (n.split(".")[0], n))
            for m in t.getmembers():
                assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o644)
    assert seen == {k: sp for sp, ks in splits.items() for k in ks}


def test_webdataset_reads_shards(built):
    out = built["out"]
    for tar in sorted((out / "shards").glob("*.tar")):
        ours = [s["key"] for s in pack.iter_samples(tar)]
        ds = wds.WebDataset(str(tar), shardshuffle=False, empty_check=False)
        theirs = []
        for s in ds:
            assert {"source.mp4", "reference.png", "edited.mp4", "mask.npy", "caption.txt", "json"} <= set(s)
            assert json.loads(s["json"])["key"] == s["__key__"]
            theirs.append(s["__key__"])
        assert theirs == ours


def test_card_counts(built):
    card = read_json(built["out"] / "card.json")
    c = card["counts"]
    assert c["videos"] == {"raw_dirs": 6, "rejected": 1, "ingested": 5, "with_clips": 5}
    assert c["clips"]["made"] == 5 and c["masks"]["made"] == 5 and c["masks"]["qc_rejected"] == 1
    assert c["pairs"] == {"candidates": 11, "rejected": 1, "kept": 10}
    assert c["synth"] == {"synthesised": 10, "rejected": 2}
    f = c["filter"]
    assert (f["scored"], f["l1_rejected"], f["l2_rejected"], f["kept_l1_l2"]) == (10, 1, 1, 8)
    assert (f["l3_sampled"], f["l3_rejected"], f["l3_pending"], f["kept"]) == (4, 1, 3, 7)
    p = c["packed"]
    assert p["total"] == 7 and p["train"] + p["val"] + p["benchmark"] == 7 and p["rejected"] == 0
    assert sum(p["videos"].values()) == 5
    rj = card["rejections_by_stage"]
    assert rj["ingest"] == {"decode failed": 1} and rj["filter"] == {"l1": 1, "l2": 1}
    assert rj["review"] == {"l3": 1} and rj["pairs"] == {"category": 1}
    cats = card["categories"]
    assert cats["from"] == {"watch": 7} and sum(cats["to"].values()) == 7
    h = card["score_histograms"]["bg_ssim"]
    assert h["n"] == 10 and sum(h["counts"]) == 10 and len(h["edges"]) == len(h["counts"]) + 1
    assert h["counts"][19] == 9 and h["counts"][10] == 1
    assert sum(card["score_histograms"]["warp_error"]["counts"]) + card["score_histograms"]["warp_error"]["overflow"] == 10
    rows = read_jsonl(built["out"] / "rejects.jsonl")
    assert [(r["stage"], r["item"]) for r in rows] == sorted((r["stage"], r["item"]) for r in rows)
    assert {r["stage"] for r in rows} == {"ingest", "maskqc", "pairs", "synth", "filter", "review"}
    man = read_json(built["out"] / "manifest.json")
    assert man["stage"] == "dataset" and man["counts"]["samples"] == 7
    assert man["params"] == {"seed": 1234, "pack": PARAMS["pack"]}
    assert any(k.endswith("review") for k in man["inputs"])


def test_card_uses_pairs_summary(built, tmp_path):
    import shutil
    w = dict(built)
    w["work"] = tmp_path / "work"
    shutil.copytree(built["work"], w["work"])
    write_json(w["work"] / "pairs" / "summary.json", {"candidates": 40, "rational": 25, "kept": 10,
                                                      "rejected_by_reason": {"category": 15}})
    card = run_pack(w, tmp_path / "ds", w["work"] / "review")
    assert card["counts"]["pairs"] == {"candidates": 40, "rational": 25, "kept": 10, "rejected": 1,
                                       "rejected_by_reason": {"category": 15}}


def test_without_review_and_broken_item(built, tmp_path):
    # no L3: the victim comes back; a kept pair with a missing edited video is rejected, the stage completes
    import shutil
    w = dict(built)
    work = tmp_path / "work"
    shutil.copytree(built["work"], work)
    w["work"] = work
    broken = "vid000_s00c0__prod02.v0"
    (work / "synth" / "shard-0000" / broken / "edited.mp4").unlink()
    card = run_pack(w, tmp_path / "ds", None)
    splits = read_json(tmp_path / "ds" / "splits.json")
    keys = {k for ks in splits.values() for k in ks}
    assert pack.sample_key(built["victim"]) in keys and pack.sample_key(broken) not in keys
    assert card["counts"]["packed"]["rejected"] == 1
    rows = [r for r in read_jsonl(tmp_path / "ds" / "rejects.jsonl") if r["stage"] == "pack"]
    assert rows[0]["item"] == broken and "edited.mp4" in rows[0]["reason"]


def test_invalid_params(built, tmp_path):
    for key, val in (("samples_per_shard", 0), ("val_fraction", 1.2), ("benchmark_fraction", "x")):
        bad = json.loads(json.dumps(PARAMS))
        bad["pack"][key] = val
        with pytest.raises(ValueError, match=f"pack.{key}"):
            run_pack(built, tmp_path / "x", None, params=bad)
    with pytest.raises(ValueError, match="seed"):
        run_pack(built, tmp_path / "x", None, params={"pack": PARAMS["pack"]})
    assert not (tmp_path / "x").exists()


def test_cli(built, tmp_path):
    work = built["work"]
    out = tmp_path / "cli"
    cmd = [sys.executable, str(ROOT / "scripts/pack.py"), "--params", json.dumps(PARAMS), "--work", str(work),
           "--pairs-dir", str(work / "pairs"), "--synth", *[str(work / "synth" / s) for s in built["shards"]],
           "--filter", *[str(work / "filter" / s) for s in built["shards"]], "--review", str(work / "review"),
           "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    assert _files(out) == _files(built["out"])
