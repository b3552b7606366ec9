"""The dataset index and `python -m pvtt data`: a real (tiny) build, every stage run for real.

Two sample videos plus a corrupt upload, three sample products plus an unreadable one, go
through ingest -> shots -> clips -> products -> index -> masks -> maskqc -> backgrounds ->
pairs -> synth -> filter (a strict L2 threshold rejects some) -> review (a verdicts file
rejects one) -> pack. The index's counts are checked against what each stage wrote, and a
triplet's lineage against the files themselves.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from genbuild.io.jsonio import read_json
from genbuild.params import deep_merge
from genbuild.workflow import rule_params
from pvtt.data import backgrounds, clips, index, ingest, maskqc, masks, pairs, products, sample, shots, synth, vbatch
from pvtt.filter import filter as filters
from pvtt.filter import review
from pvtt.pack import dataset_index as DI
from pvtt.pack import pack
from pvtt.pipeline import DATASET_RULES, RULES, dataset_params_json

ROOT = Path(__file__).resolve().parents[3]
OVERLAY = {"video": {"preset": "ultrafast"},
           "pvtt": {"sample": {"n_videos": 2, "n_products": 3, "views_per_product": 2, "cuts_per_video": [1, 1],
                               "shot_seconds": [2.4, 2.6], "resolutions": [[192, 108]]},
                    "pairs": {"products_per_clip": 2, "pairs_per_shard": 4, "expected_clips_per_video": 2},
                    "filter": {"l2": {"min_sharpness_ratio": 0.8}, "l3": {"review_fraction": 0.5}}}}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _config() -> dict:
    cfg = yaml.safe_load((ROOT / "params.yaml").read_text())
    cfg = deep_merge(cfg, yaml.safe_load((ROOT / "configs" / "ci.yaml").read_text()))
    return deep_merge(cfg, OVERLAY)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("dsi")
    work = root / "work"
    cfg = _config()
    P = lambda rule: rule_params(cfg, rule)  # noqa: E731
    man = sample.generate_sample(work / "sample", P("sample"))
    sample_manifest = work / "sample" / "manifest.json"
    bad = root / "bad"
    bad.mkdir()
    (bad / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    (bad / "not_an_image.png").write_text("not an image\n")
    bad_manifest = bad / "manifest.yaml"
    bad_manifest.write_text(yaml.safe_dump({
        "videos": [{"id": "bad_corrupt", "path": "corrupt.mp4", "category": "bottle", "caption": "corrupt"}],
        "products": [{"id": "bad_product", "category": "bag", "name": "broken", "caption": "broken",
                      "views": [{"view": "view0", "path": "not_an_image.png"}]}]}))
    videos = {v["id"]: sample_manifest for v in man["videos"]} | {"bad_corrupt": bad_manifest}
    prods = {p["id"]: sample_manifest for p in man["products"]} | {"bad_product": bad_manifest}
    L = vbatch.Layout(videos, vbatch.per_job(cfg["pvtt"]))   # work/<stage>/<batch>/<video>
    D = lambda stage, v: L.dir(work, stage, v)  # noqa: E731
    for vid, m in sorted(videos.items()):
        ingest.run(m, vid, D("raw", vid), P("ingest"))
        shots.run(D("raw", vid), D("shots", vid), P("shots"))
        clips.run(D("raw", vid), D("shots", vid), D("clips", vid), P("clips"))
    for pid, m in sorted(prods.items()):
        products.run(m, pid, work / "products" / pid, P("products"))
    index.build_index(work, sorted(videos), sorted(prods), work / "index.sqlite", per_job=vbatch.per_job(cfg["pvtt"]))
    for vid in sorted(videos):
        masks.run(D("clips", vid), D("masks", vid), P("masks"))
        maskqc.run(D("clips", vid), D("masks", vid), D("maskqc", vid), P("maskqc"))
        backgrounds.run(D("clips", vid), D("masks", vid), D("maskqc", vid), D("backgrounds", vid),
                        P("backgrounds"))
    n = pairs.num_shards(cfg["pvtt"]["pairs"], len(videos))
    shard_list, summary, rej = pairs.build_pairs(work, sorted(videos), P("pairs"), n)
    pairs.write_outputs(work / "pairs", shard_list, summary, rej)
    shards = [f"shard-{i:04d}" for i in range(n)]
    for s in shards:
        synth.run(work, work / "pairs" / f"{s}.json", work / "synth" / s, P("synth"))
        filters.run(P("filter"), work, work / "pairs" / f"{s}.json", work / "synth" / s, work / "filter" / s)
    fdirs = [work / "filter" / s for s in shards]
    d0 = review.run(P("review"), work, fdirs, work / "review", verdicts=str(root / "none.csv"))
    victim = d0["sampled"][0]
    (root / "verdicts.csv").write_text(f"pair_id,verdict,notes\n{victim},reject,wrong product\n")
    review.run(P("review"), work, fdirs, work / "review", verdicts=str(root / "verdicts.csv"))
    stage_params = json.loads(dataset_params_json(cfg))

    def run_pack(out: Path) -> dict:
        return pack.run(P("pack"), work, work / "pairs", [work / "synth" / s for s in shards], fdirs,
                        work / "review", out, stage_params)

    out = root / "dataset"
    card = run_pack(out)
    return {"root": root, "work": work, "out": out, "card": card, "cfg": cfg, "shards": shards, "victim": victim,
            "run_pack": run_pack, "videos": sorted(videos), "products": sorted(prods), "P": P, "D": D}


@pytest.fixture(scope="module")
def st(built):
    conn = DI.open_index(built["out"] / "index.sqlite")
    try:
        return {s["stage"]: s for s in DI.stats(conn)["stages"]} | {"_all": DI.stats(conn)}
    finally:
        conn.close()


def _files(d: Path) -> dict[str, bytes]:
    return {f.relative_to(d).as_posix(): f.read_bytes() for f in sorted(d.rglob("*")) if f.is_file()}


def test_stats_match_every_stage_output(built, st):
    work, card, D = built["work"], built["card"], built["D"]
    infos = [read_json(D("raw", v) / "info.json") for v in built["videos"]]
    assert st["ingest"]["ok"] == sum(i["status"] == "ok" for i in infos) == 2
    assert st["ingest"]["rejected"] == sum(i["status"] == "rejected" for i in infos) == 1
    assert st["ingest"]["rejects_by_reason"] == {"unreadable video": 1}
    assert st["shots"]["ok"] == 2 and st["shots"]["rejected"] == 0
    n_clips = sum(len(read_json(D("clips", v) / "clips.json")["clips"]) for v in built["videos"])
    assert st["clips"]["ok"] == n_clips >= 4
    views_ok = sum(len(p["views"]) for p in (read_json(work / "products" / q / "product.json") for q in built["products"])
                   if p["status"] == "ok")
    assert st["products"]["ok"] == views_ok == 6 and st["products"]["rejects_by_reason"]["unreadable image"] >= 1
    for stage, fname in (("masks", "masks.json"), ("backgrounds", "backgrounds.json")):
        made = sum(len(read_json(f)["clips"]) for f in (work / stage).glob(f"*/*/{fname}"))
        assert st[stage]["ok"] == made == n_clips, stage
    kept_qc = sum(r["kept"] for f in (work / "maskqc").glob("*/*/qc.json") for r in read_json(f)["clips"].values())
    assert st["maskqc"]["ok"] == kept_qc
    summary = read_json(work / "pairs" / "summary.json")
    n_pairs = sum(len(read_json(work / "pairs" / f"{s}.json")["pairs"]) for s in built["shards"])
    assert st["pairs"]["ok"] == n_pairs == summary["kept"] and st["pairs"]["totals"]["candidates"] == summary["candidates"]
    n_synth = sum(s["status"] == "ok" for sh in built["shards"]
                  for s in read_json(work / "synth" / sh / "synth.json")["pairs"].values())
    assert st["synth"]["ok"] == n_synth == n_pairs
    scores = {k: v for sh in built["shards"] for k, v in read_json(work / "filter" / sh / "scores.json")["pairs"].items()}
    assert st["filter"]["ok"] == sum(s["kept"] for s in scores.values())
    assert st["filter"]["rejected"] == sum(not s["kept"] for s in scores.values()) >= 1
    assert st["filter"]["rejects_by_reason"] == {"l2": st["filter"]["rejected"]}
    decisions = read_json(work / "review" / "decisions.json")
    assert st["review"]["rejected"] == 1 and st["review"]["totals"]["sampled"] == len(decisions["sampled"])
    assert st["review"]["ok"] == st["filter"]["ok"] - 1
    splits = read_json(built["out"] / "splits.json")
    assert st["pack"]["ok"] == sum(map(len, splits.values())) == card["counts"]["packed"]["total"] == st["review"]["ok"]
    assert st["pack"]["ok_by"] == {sp: len(k) for sp, k in splits.items() if k}
    # the card and the index agree: rejects by reason per stage, categories, the card's own stage table
    for stage, reasons in card["rejections_by_stage"].items():
        assert st[stage]["rejects_by_reason"] == reasons, stage
    allst = st["_all"]
    assert allst["categories"]["triplets_to"] == card["categories"]["to"]
    assert allst["categories"]["triplets_from"] == card["categories"]["from"]
    assert allst["categories"]["videos"] == card["categories"]["videos"] and sum(allst["categories"]["videos"].values()) == 2
    assert card["stages"] == allst["stages"] and allst["triplets"] == st["pack"]["ok"]
    assert st["masks"]["backends"] == {"classical": n_clips} and st["synth"]["backends"] == {"A": n_synth}
    assert st["products"]["backends"] == {"white_matting": 3}


def test_lineage_reaches_the_raw_video(built):
    D = built["D"]
    work, out = built["work"], built["out"]
    splits = read_json(out / "splits.json")
    key = sorted(k for ks in splits.values() for k in ks)[0]
    conn = DI.open_index(out / "index.sqlite")
    try:
        d = DI.lineage(conn, key)
        assert DI.lineage(conn, d["id"]) == d                      # by WebDataset key or pair id
    finally:
        conn.close()
    pair = next(p for s in built["shards"] for p in read_json(work / "pairs" / f"{s}.json")["pairs"] if p["id"] == d["id"])
    vid = pair["video"]
    info = read_json(D("raw", vid) / "info.json")
    assert d["packed"] and d["key"] == key and d["tar"].startswith(f"shards/{d['split']}-")
    v = d["video"]
    assert v["id"] == vid and v["source"] == info["source"] == f"videos/{vid}.mp4"
    assert v["source_sha256"] == _sha(work / "sample" / info["source"]) and v["sha256"] == _sha(work / v["path"])
    shot = next(s for s in read_json(D("shots", vid) / "shots.json")["shots"] if s["index"] == pair["shot"])
    assert (d["shot"]["index"], d["shot"]["start_frame"], d["shot"]["end_frame"]) == (shot["index"], shot["start_frame"],
                                                                                     shot["end_frame"])
    assert d["clip"]["id"] == pair["clip"] and d["clip"]["sha256"] == _sha(work / pair["clip_path"])
    pv = d["product"]["view"]
    assert (d["product"]["id"], pv["view"], pv["path"]) == (pair["product"], pair["view"], pair["reference_path"])
    assert pv["sha256"] == _sha(work / pair["reference_path"])
    assert d["synth"]["edited_sha256"] == _sha(work / d["synth"]["edited_path"])
    assert d["backends"] == {"shots": "content", "products": "white_matting", "masks": "classical",
                             "backgrounds": "opencv", "synth": "A"}
    P = built["P"]
    assert set(d["params"]) == set(DATASET_RULES)
    for rule in ("ingest", "masks", "synth", "filter", "backgrounds"):
        assert d["params"][rule] == json.loads(json.dumps(P(rule))), rule
    assert d["params"]["pack"] == {"seed": 1234, "pack": P("pack")["pack"]}
    assert all(s["status"] == "ok" for s in d["stages"]), d["stages"]
    assert d["filter"]["l1"]["pass"] and d["filter"]["l2"]["pass"]
    # the index's hashes are those of the sample's bytes in the tar
    sample_ = next(s for s in pack.iter_samples(out / d["tar"]) if s["key"] == key)
    assert hashlib.sha256(sample_["source"]).hexdigest() == d["clip"]["sha256"]
    assert hashlib.sha256(sample_["edited"]).hexdigest() == d["synth"]["edited_sha256"]


def test_lineage_of_a_pair_that_was_not_packed(built):
    conn = DI.open_index(built["out"] / "index.sqlite")
    try:
        d = DI.lineage(conn, built["victim"])
        with pytest.raises(DI.UnknownTriplet, match="python -m pvtt data ids"):
            DI.lineage(conn, "vid999_s00c0__prod01_view0")
    finally:
        conn.close()
    assert not d["packed"] and d["review"] == "rejected"
    assert {s["stage"]: s["status"] for s in d["stages"]}["review"] == "rejected"


def test_byte_identical_rebuild_and_card_media(built):
    again = built["root"] / "dataset-again"
    built["run_pack"](again)
    a, b = _files(built["out"]), _files(again)
    assert sorted(a) == sorted(b)
    assert {"index.sqlite", "card.html", "plots/stages.svg", "plots/rejections.svg", "plots/categories.svg",
            "plots/hist_bg_ssim.svg", "plots/hist_sharpness_ratio.svg"} <= set(a)
    for name in a:
        assert a[name] == b[name], name
    card = read_json(built["out"] / "card.json")
    assert card["index"] == "index.sqlite" and card["html"] == "card.html"
    for p in card["plots"]:
        root = ET.fromstring(a[p])
        assert root.tag.endswith("svg"), p
    assert "min 0.8" in a["plots/hist_sharpness_ratio.svg"].decode()           # the filter's threshold
    assert "filter: l2" in a["plots/rejections.svg"].decode()
    page = a["card.html"].decode()
    assert page.count("<svg") == len(card["plots"]) and "unreadable video" in page
    # the eval report's "Dataset" section reads the same files (the dataset is an input of the eval rule)
    from pvtt.eval.eval import dataset_sections

    [(heading, body)] = dataset_sections(built["out"])
    assert heading == "Dataset" and body.count("<svg") == len(card["plots"]) and "survivors" in body
    assert dataset_sections(built["root"]) == []


def test_cli(built, st):
    idx = str(built["out"] / "index.sqlite")

    def data(*args):
        return subprocess.run([sys.executable, "-m", "pvtt", "data", *args], capture_output=True, text=True, cwd=ROOT)

    res = data("stats", "--index", idx)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert f"Triplets: {st['pack']['ok']}" in res.stdout
    assert any(ln.split()[:4] == ["ingest", "videos", "2", "1"] and "unreadable video 1" in ln for ln in lines), res.stdout
    assert any(ln.split()[:2] == ["filter", "pairs"] and f"l2 {st['filter']['rejected']}" in ln for ln in lines)
    js = json.loads(data("stats", "--index", idx, "--json").stdout)
    assert js == json.loads(json.dumps(st["_all"]))
    ids = data("ids", "--index", idx, "--split", "benchmark", "--json")
    bench = json.loads(ids.stdout)
    assert bench and {r["split"] for r in bench} == {"benchmark"}
    tid = bench[0]["id"]
    res = data("lineage", tid, "--index", idx)
    assert res.returncode == 0, res.stderr
    d = json.loads(data("lineage", tid, "--index", idx, "--json").stdout)
    for text in (d["video"]["id"], d["video"]["sha256"], d["video"]["source"], d["clip"]["id"],
                 d["product"]["view"]["sha256"], "backend classical", "route A", "params each stage read"):
        assert text in res.stdout, text
    res = data("lineage", "no_such_triplet", "--index", idx)
    assert res.returncode == 2 and "python -m pvtt data ids" in res.stderr and not res.stdout
    res = data("stats", "--index", str(built["root"] / "missing.sqlite"))
    assert res.returncode == 2 and "--index" in res.stderr


def test_pack_rule_records_every_dataset_rules_params():
    # The rule passes what every dataset rule read; pack's code list names what pack runs, and the
    # trainers (which read the shard format, pvtt.pack.format) do not run the packing code, the index or the plots.
    smk = (ROOT / "rules" / "pvtt" / "pack.smk").read_text()
    assert "--stage-params {params.stages:q}" in smk and "pvtt.dataset_params_json(config)" in smk
    assert {"pvtt/pack/dataset_index.py", "pvtt/pack/dataset_card.py", "pvtt/data/index.py"} <= set(RULES["pack"].code_files())
    for trainer in ("latents", "teacher", "student_4"):
        code = set(RULES[trainer].code_files())
        assert "pvtt/pack/format.py" in code and not code & {"pvtt/pack/pack.py", "pvtt/pack/dataset_index.py"}, trainer
