"""Pack kept pairs into WebDataset tar shards, split by source video, with a dataset card.

Output directory (``artifacts/dataset``):

* ``shards/{train,val,benchmark}-{k:06d}.tar``: WebDataset shards of ``pack.samples_per_shard``
  samples, written byte-reproducibly (members sorted by (key, name); ``genbuild.data.shards``).
  Members of a sample ``<key>``: see ``pvtt.pack.format`` (the edit mask is the original | new
  product mask).
* ``splits.json`` {split: [keys]}, ``card.json`` (dataset card), ``rejects.jsonl`` (all rejects
  of every stage under the work dir plus pack's own, sorted by stage, item), ``manifest.json``.
* ``index.sqlite``: the dataset index (``pvtt.pack.dataset_index``): counts per category, survivors and
  rejects per stage, and every triplet's lineage back to its raw video; ``python -m pvtt data``.
* ``card.html`` and ``plots/*.svg`` (``pvtt.pack.dataset_card``): the card's counts per stage, rejection
  reasons, category distribution and score histograms as a page and as plots.

Split: source videos sorted by ``sha256(f"{seed}:{video}")``; the first
``ceil(benchmark_fraction * n)`` are benchmark, the next ``ceil(val_fraction * n)`` val, the rest
train. With n >= 3 every split with a positive fraction gets >= 1 video and train keeps >= 1;
with fewer videos train is served first (n=1: train; n=2: benchmark + train).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np

from genbuild import stage as cli
from genbuild.data.shards import write_tar
from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import read_json, read_jsonl, write_json, write_jsonl
from genbuild.io.masks import load_masks
from genbuild.io.rejects import Rejects
from genbuild.manifest import sha256_file, write_manifest
from pvtt.data import vbatch
from pvtt.pack.format import MEMBERS, SPLITS, iter_samples  # noqa: F401  (iter_samples: the reader of what this writes)

log = logging.getLogger("pvtt.pack.pack")

STAGE = "pack"
INDEX = "index.sqlite"   # the dataset index (pvtt.pack.dataset_index), beside the shards
HISTOGRAMS = {  # metric -> (level, low, high, bins); values outside go to underflow/overflow
    "bg_ssim": ("l1", 0.0, 1.0, 20),
    "presence": ("l1", 0.0, 1.0, 10),
    "warp_error": ("l2", 0.0, 0.2, 20),
    "sharpness_ratio": ("l2", 0.0, 2.0, 20),
}


# ------------------------------------------------------------------------------------ params

def read_params(params: dict) -> dict:
    def get(key):
        try:
            return cli.get(params, key)
        except KeyError as e:
            raise ValueError(str(e.args[0])) from None

    seed = get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"params key 'seed' must be an integer, got {seed!r}")
    sps = get("pack.samples_per_shard")
    if isinstance(sps, bool) or not isinstance(sps, int) or sps < 1:
        raise ValueError(f"params key 'pack.samples_per_shard' must be an integer >= 1, got {sps!r}")
    fr = {}
    for k in ("val_fraction", "benchmark_fraction"):
        v = get(f"pack.{k}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
            raise ValueError(f"params key 'pack.{k}' must be a number in [0, 1), got {v!r}")
        fr[k] = float(v)
    if fr["val_fraction"] + fr["benchmark_fraction"] >= 1.0:
        raise ValueError("params keys 'pack.val_fraction' + 'pack.benchmark_fraction' must be < 1 "
                         f"(got {fr['val_fraction']} + {fr['benchmark_fraction']})")
    return {"seed": seed, "pack": {"samples_per_shard": sps, **fr}}


# ------------------------------------------------------------------------------------- split

def sample_key(pair_id: str) -> str:
    """WebDataset key: characters other than [A-Za-z0-9_-] become '_' (no dots: webdataset splits at the first)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", pair_id)


def split_videos(videos: list[str], seed: int, val_fraction: float, benchmark_fraction: float) -> dict[str, str]:
    """video -> split, deterministic in (seed, video names); see the module docstring for the rule."""
    order = sorted(set(videos), key=lambda v: (hashlib.sha256(f"{seed}:{v}".encode()).hexdigest(), v))
    n = len(order)
    nb = math.ceil(round(benchmark_fraction * n, 9))
    nv = math.ceil(round(val_fraction * n, 9))
    floor_b = 1 if n >= 3 and benchmark_fraction > 0 else 0
    floor_v = 1 if n >= 3 and val_fraction > 0 else 0
    while n and nb + nv > n - 1:
        if nv > floor_v and (nv >= nb or nb <= floor_b):
            nv -= 1
        elif nb > floor_b:
            nb -= 1
        else:
            break
    out = {}
    for i, v in enumerate(order):
        out[v] = "benchmark" if i < nb else "val" if i < nb + nv else "train"
    return out


# ------------------------------------------------------------------------------------ inputs

def _load_pairs(pairs_dir: Path) -> dict[str, dict]:
    """shard name -> {pair_id: pair} for every pairs/shard-*.json."""
    out = {}
    for f in sorted(pairs_dir.glob("shard-*.json")):
        out[f.stem] = {p["id"]: p for p in read_json(f).get("pairs", [])}
    return out


def _edit_mask(work: Path, pair: dict, synth_dir: Path) -> bytes:
    old = load_masks(work / pair["mask_path"])
    new = load_masks(synth_dir / pair["id"] / "mask.npy.gz")
    if old.shape != new.shape:
        raise ValueError(f"original mask {old.shape} and new mask {new.shape} differ in shape")
    buf = io.BytesIO()
    np.save(buf, np.logical_or(old, new).astype(np.uint8), allow_pickle=False)
    return buf.getvalue()


def _sample_members(key: str, work: Path, pair: dict, synth_dir: Path, meta: dict) -> list[tuple[str, bytes]]:
    pid = pair["id"]
    files = {
        "source.mp4": (work / pair["clip_path"]).read_bytes(),
        "reference.png": (work / pair["reference_path"]).read_bytes(),
        "edited.mp4": (synth_dir / pid / "edited.mp4").read_bytes(),
        "mask.npy": _edit_mask(work, pair, synth_dir),
        "caption.txt": str(pair.get("caption", "")).encode("utf-8"),
        "json": (json.dumps(meta, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"),
    }
    for name in ("source.mp4", "reference.png", "edited.mp4"):
        if not files[name]:
            raise ValueError(f"{name}: empty file")
    return sorted((f"{key}.{ext}", data) for ext, data in files.items())


def _reject_files(root: Path) -> list[Path]:
    """rejects.jsonl files of a stage dir (root/ and root/<item>/, or root/<batch>/<video>/ for the per-video
    stages), skipping killed jobs' hidden temporaries."""
    if not root.is_dir():
        return []
    files = list(root.glob("rejects.jsonl")) + list(root.glob("*/rejects.jsonl"))
    if root.name in vbatch.STAGES:
        files += list(root.glob("*/*/rejects.jsonl"))
    return sorted(f for f in files if not any(p.startswith(".") for p in f.relative_to(root).parts))


def _reject_sources(work: Path) -> list[tuple[str, dict]]:
    """(file relative to work, row) of every stage's rejects: work/<stage>/rejects.jsonl and
    work/<stage>/<item>/rejects.jsonl."""
    rows = []
    for stage_dir in sorted(p for p in work.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in _reject_files(stage_dir):
            rel = f.relative_to(work).as_posix()
            rows += [(rel, r) for r in read_jsonl(f)]
    return rows


def _all_rejects(work: Path) -> list[dict]:
    """Every stage's rejects: work/<stage>/rejects.jsonl and work/<stage>/<item>/rejects.jsonl."""
    return [r for _, r in _reject_sources(work)]


def _sort_rejects(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (str(r.get("stage", "")), str(r.get("item", "")), str(r.get("reason", "")),
                                       json.dumps(r, sort_keys=True)))


# -------------------------------------------------------------------------------------- card

def _histogram(values: list[float], lo: float, hi: float, bins: int) -> dict:
    edges = [round(lo + (hi - lo) * i / bins, 6) for i in range(bins + 1)]
    vals = np.asarray([v for v in values if v is not None], dtype=np.float64)
    inside = vals[(vals >= lo) & (vals <= hi)]
    counts = np.histogram(inside, bins=bins, range=(lo, hi))[0] if len(inside) else np.zeros(bins, int)
    return {"edges": edges, "counts": [int(c) for c in counts], "underflow": int((vals < lo).sum()),
            "overflow": int((vals > hi).sum()), "n": int(len(vals)),
            "min": round(float(vals.min()), 6) if len(vals) else None,
            "max": round(float(vals.max()), 6) if len(vals) else None,
            "mean": round(float(vals.mean()), 6) if len(vals) else None}


def _count_files(root: Path, pattern: str) -> int:
    return sum(1 for f in root.glob(pattern) if not any(p.startswith(".") for p in f.relative_to(root).parts))


def _reason_key(reason: str) -> str:
    return str(reason).split(":")[0].strip()


def _pair_counts(n_listed: int, summary: dict | None, n_rejects: int) -> dict:
    """Candidates from pairs/summary.json when present (it counts per-pair rationality rejections),
    else listed pairs + rows of pairs/rejects.jsonl."""
    if summary and "candidates" in summary:
        out = {"candidates": summary["candidates"], "kept": n_listed, "rejected": n_rejects}
        for k in ("rational", "not_selected", "own_product_excluded", "rejected_by_reason"):
            if k in summary:
                out[k] = summary[k]
        return out
    return {"candidates": n_listed + n_rejects, "kept": n_listed, "rejected": n_rejects}


def build_card(work: Path, pairs: dict[str, dict], synth_docs: dict[str, dict], scores: dict[str, dict],
               decisions: dict | None, packed: list[dict], all_rejects: list[dict], params: dict,
               pairs_summary: dict | None = None) -> dict:
    by_stage: dict[str, Counter] = {}
    items_by_stage: dict[str, set] = {}
    for r in all_rejects:
        st = str(r.get("stage", "?"))
        by_stage.setdefault(st, Counter())[_reason_key(r.get("reason", ""))] += 1
        items_by_stage.setdefault(st, set()).add(str(r.get("item")))
    n_rej = {st: len(items) for st, items in items_by_stage.items()}

    def rejected_in(dirname: str) -> int:
        return len({str(r.get("item")) for f in _reject_files(work / dirname) for r in read_jsonl(f)})

    n_pairs = sum(len(v) for v in pairs.values())
    scored = list(scores.values())
    l1_fail = sum(1 for s in scored if not s["l1"]["pass"])
    l2_fail = sum(1 for s in scored if s["l1"]["pass"] and not s["l2"]["pass"])
    kept_l2 = sum(1 for s in scored if s["kept"])
    d = decisions or {}
    split_counts = Counter(s["split"] for s in packed)
    videos_per_split = {sp: len({s["video"] for s in packed if s["split"] == sp}) for sp in SPLITS}
    raw_dirs = len(vbatch.scan(work / "raw"))  # per-video stages: <stage>/<batch>/<video>/
    masks_total = _count_files(work / "masks", "*/*/*.npy.gz") if (work / "masks").exists() else 0
    counts = {
        "videos": {"raw_dirs": raw_dirs, "rejected": rejected_in("raw"),
                   "ingested": max(0, raw_dirs - rejected_in("raw")),
                   "with_clips": sum(1 for p in vbatch.scan(work / "clips").values() if any(p.glob("*.mp4")))},
        "shots": {"rejected": rejected_in("shots")},
        "clips": {"made": _count_files(work / "clips", "*/*/*.mp4") if (work / "clips").exists() else 0,
                  "rejected": rejected_in("clips")},
        "products": {"rejected": rejected_in("products")},
        "masks": {"made": masks_total, "rejected": rejected_in("masks"),
                  "qc_rejected": rejected_in("maskqc"),
                  "kept": max(0, masks_total - rejected_in("maskqc"))},
        "backgrounds": {"made": _count_files(work / "backgrounds", "*/*/*.mp4") if (work / "backgrounds").exists() else 0,
                        "rejected": rejected_in("backgrounds")},
        "pairs": _pair_counts(n_pairs, pairs_summary, len(read_jsonl(work / "pairs" / "rejects.jsonl"))),
        "synth": {"synthesised": sum(1 for doc in synth_docs.values() for s in doc.get("pairs", {}).values()
                                     if isinstance(s, dict) and s.get("status") == "ok"),
                  "rejected": n_rej.get("synth", 0)},
        "filter": {"scored": len(scored), "errors": sum(1 for r in all_rejects if r.get("stage") == "filter"
                                                       and _reason_key(r.get("reason", "")) == "error"),
                   "l1_rejected": l1_fail, "l2_rejected": l2_fail, "kept_l1_l2": kept_l2,
                   "l3_sampled": len(d.get("sampled", [])), "l3_rejected": len(d.get("rejected", [])),
                   "l3_accepted": len(d.get("accepted", [])), "l3_pending": len(d.get("pending", [])),
                   "kept": kept_l2 - len(d.get("rejected", []))},
        "packed": {"total": len(packed), "rejected": n_rej.get(STAGE, 0),
                   **{sp: split_counts.get(sp, 0) for sp in SPLITS},
                   "videos": videos_per_split},
    }
    hist = {}
    for name, (level, lo, hi, bins) in HISTOGRAMS.items():
        hist[name] = _histogram([s[level][name] for s in scored], lo, hi, bins)
    cats = {"from": dict(sorted(Counter(str(s["category_from"]) for s in packed).items())),
            "to": dict(sorted(Counter(str(s["category_to"]) for s in packed).items())),
            "pairs": dict(sorted(Counter(f"{s['category_from']}->{s['category_to']}" for s in packed).items()))}
    return {
        "name": "pvtt-triplets",
        "description": "Product-video triplets (source video, reference product image, edited video) with the "
                       "edit-region mask and a caption, as WebDataset shards split by source video.",
        "sample_members": [f"<key>.{m}" for m in MEMBERS],
        "counts": counts,
        "rejections_by_stage": {st: dict(sorted(c.items())) for st, c in sorted(by_stage.items())},
        "categories": cats,
        "score_histograms": hist,
        "params": params,
    }


# -------------------------------------------------------------------------------------- pack

def _load_scores(filter_dirs: list[str | Path]) -> tuple[dict[str, dict], dict[str, str]]:
    """(pair id -> filter scores, pair id -> filter shard name) over every filter shard.

    A pair scored in two shards would make its sample ambiguous, so it fails the stage
    instead of one score silently winning.
    """
    scores: dict[str, dict] = {}
    shard_of: dict[str, str] = {}
    for fd in sorted(Path(x) for x in filter_dirs):
        for pid, s in sorted(read_json(fd / "scores.json").get("pairs", {}).items()):
            if pid in scores:
                raise ValueError(f"pair {pid} appears in two filter shards: {shard_of[pid]} and {fd.name}")
            scores[pid], shard_of[pid] = s, fd.name
    return scores, shard_of


def _kept_candidates(scores: dict[str, dict], shard_of: dict[str, str], l3_rejected: set, pairs: dict[str, dict],
                     pairs_dir: Path, synth_by_shard: dict[str, Path], rejects: Rejects) -> list[tuple[str, str, dict]]:
    """(pair id, shard, pair) of the pairs kept by L1/L2 and not rejected in review, by pair id.

    A kept pair missing from its pairs shard only loses its sample (a reject), whereas a kept
    shard without its synth directory means the rule passed the wrong inputs, so it fails.
    """
    candidates = []
    for pid in sorted(scores):
        if not scores[pid]["kept"] or pid in l3_rejected:
            continue
        shard = shard_of[pid]
        pair = pairs.get(shard, {}).get(pid)
        if pair is None:
            rejects.add(pid, f"missing: pair not found in {pairs_dir / (shard + '.json')}", shard=shard)
            continue
        if shard not in synth_by_shard:
            raise ValueError(f"filter shard {shard} has kept pairs but no --synth directory named {shard} was given")
        candidates.append((pid, shard, pair))
    return candidates


def _split_candidates(candidates: list[tuple[str, str, dict]], splits: dict[str, str],
                      rejects: Rejects) -> dict[str, list[tuple[str, str, str, dict]]]:
    """split -> [(key, pair id, shard, pair)].

    Two pair ids can sanitise to the same WebDataset key, and a reader would merge their
    members; the later pair (by id) is rejected so every key names one sample.
    """
    by_split: dict[str, list] = {sp: [] for sp in SPLITS}
    keys_seen: dict[str, str] = {}
    for pid, shard, pair in candidates:
        key = sample_key(pid)
        if key in keys_seen:
            rejects.add(pid, f"key: sample key {key} already used by pair {keys_seen[key]}", shard=shard)
            continue
        keys_seen[key] = pid
        by_split[splits[pair["video"]]].append((key, pid, shard, pair))
    return by_split


def _split_samples(sp: str, items: list[tuple[str, str, str, dict]], work: Path, scores: dict[str, dict],
                   synth_by_shard: dict[str, Path], l3: dict[str, set], rejects: Rejects,
                   packed: list[dict]) -> list[tuple[str, list[tuple[str, bytes]]]]:
    """(key, members) of one split's samples in key order; each sample's record goes to ``packed``.

    A sample whose files cannot be read or combined is rejected, not fatal, so one broken synth
    output costs one triplet rather than the whole dataset.
    """
    samples = []
    for key, pid, shard, pair in sorted(items):
        review = ("rejected" if pid in l3["rejected"] else "accepted" if pid in l3["accepted"]
                  else "pending" if pid in l3["sampled"] else "not_sampled")
        meta = {**pair, "key": key, "split": sp, "shard": shard, "review": review,
                "scores": {"l1": scores[pid]["l1"], "l2": scores[pid]["l2"]}}
        try:
            members = _sample_members(key, work, pair, synth_by_shard[shard], meta)
        except (OSError, ValueError, EOFError) as e:
            rejects.add(pid, f"error: {e.__class__.__name__}: {e}", shard=shard)
            continue
        samples.append((key, members))
        digest = {name.split(".", 1)[1]: hashlib.sha256(data).hexdigest() for name, data in members}
        packed.append({"key": key, "split": sp, "video": pair["video"],
                       "category_from": pair.get("category_from"), "category_to": pair.get("category_to"),
                       "id": pid, "clip_sha256": digest["source.mp4"],
                       "reference_sha256": digest["reference.png"], "edited_sha256": digest["edited.mp4"],
                       "mask_sha256": digest["mask.npy"]})
    return samples


def _write_split_tars(tmp: Path, sp: str, samples: list[tuple[str, list[tuple[str, bytes]]]], sps: int,
                      packed: list[dict], tar_info: list[dict]) -> list[str]:
    """Write one split's samples as tars of ``sps`` samples; return their paths.

    Each tar is recorded in ``tar_info`` and on its samples' ``packed`` records (the last
    ``len(samples)`` ones) so the card and the dataset index can name every sample's tar.
    """
    files = []
    first = len(packed) - len(samples)
    for k in range(0, len(samples), sps):
        name = f"{sp}-{k // sps:06d}.tar"
        members = [m for _, ms in samples[k:k + sps] for m in ms]
        write_tar(tmp / "shards" / name, members)
        files.append(f"shards/{name}")
        tar_info.append({"path": f"shards/{name}", "split": sp, "n_samples": len(samples[k:k + sps]),
                         "sha256": sha256_file(tmp / "shards" / name)})
        for s in packed[first + k:first + k + sps]:
            s["tar"] = f"shards/{name}"
        log.info("wrote %s (%d samples)", name, len(samples[k:k + sps]))
    return files


def _pack_splits(tmp: Path, by_split: dict[str, list], work: Path, scores: dict[str, dict],
                 synth_by_shard: dict[str, Path], l3: dict[str, set], sps: int,
                 rejects: Rejects) -> tuple[list[dict], dict[str, list[str]], dict[str, list[str]], list[dict]]:
    """(packed sample records, split -> keys, split -> tar paths, tar records), splits in SPLITS order.

    Splits are written one after another so a sample's tar is known as soon as its split is done,
    and the records stay in the (split, key) order the card and the index are built from.
    """
    packed: list[dict] = []
    split_keys: dict[str, list[str]] = {sp: [] for sp in SPLITS}
    shard_files: dict[str, list[str]] = {sp: [] for sp in SPLITS}
    tar_info: list[dict] = []
    for sp in SPLITS:
        samples = _split_samples(sp, by_split[sp], work, scores, synth_by_shard, l3, rejects, packed)
        shard_files[sp] = _write_split_tars(tmp, sp, samples, sps, packed, tar_info)
        split_keys[sp] = [key for key, _ in samples]
    return packed, split_keys, shard_files, tar_info


def _finish_card(tmp: Path, card: dict, index_stats: dict, stage_params: dict | None) -> None:
    """Take the card's stage table and video / product categories from the dataset index, so the
    card and ``python -m pvtt data`` never disagree, then draw the plots from the finished card."""
    from pvtt.pack.dataset_card import write_card_media  # only this last step draws the plots

    card["index"] = INDEX
    card["stages"] = index_stats["stages"]
    card["categories"]["videos"] = index_stats["categories"]["videos"]
    card["categories"]["products"] = index_stats["categories"]["products"]
    thresholds = (stage_params or {}).get("filter", {}).get("filter")
    card.update(write_card_media(tmp, card, thresholds))


def run(params: dict, work: str | Path, pairs_dir: str | Path, synth_dirs: list[str | Path],
        filter_dirs: list[str | Path], review_dir: str | Path | None, out: str | Path,
        stage_params: dict | None = None) -> dict:
    """Pack into ``out``; ``stage_params`` (stage -> the params it read, as the rules passed them)
    goes into the dataset index's ``params`` table beside pack's own."""
    p = read_params(params)
    seed, sps = p["seed"], p["pack"]["samples_per_shard"]
    work, pairs_dir = Path(work), Path(pairs_dir)
    pairs = _load_pairs(pairs_dir)
    synth_by_shard = {Path(s).name: Path(s) for s in synth_dirs}
    synth_docs = {name: read_json(d / "synth.json") for name, d in sorted(synth_by_shard.items())
                  if (d / "synth.json").exists()}
    scores, shard_of = _load_scores(filter_dirs)
    decisions = None
    if review_dir is not None:
        decisions = read_json(Path(review_dir) / "decisions.json")
    l3 = {k: set((decisions or {}).get(k, [])) for k in ("rejected", "accepted", "sampled")}

    rejects = Rejects(STAGE)
    candidates = _kept_candidates(scores, shard_of, l3["rejected"], pairs, pairs_dir, synth_by_shard, rejects)
    splits = split_videos([pair["video"] for _, _, pair in candidates], seed,
                          p["pack"]["val_fraction"], p["pack"]["benchmark_fraction"])
    by_split = _split_candidates(candidates, splits, rejects)

    with atomic_path(out, directory=True) as tmp:
        (tmp / "shards").mkdir()
        packed, split_keys, shard_files, tar_info = _pack_splits(tmp, by_split, work, scores, synth_by_shard, l3,
                                                                 sps, rejects)
        sources = _reject_sources(work) + [(None, r) for r in rejects.rows]
        all_rejects = _sort_rejects([r for _, r in sources])
        params_read = {"seed": seed, "pack": p["pack"]}
        summary_file = pairs_dir / "summary.json"
        pairs_summary = read_json(summary_file) if summary_file.exists() else None
        card = build_card(work, pairs, synth_docs, scores, decisions, packed, all_rejects, params_read, pairs_summary)
        card["shards"] = shard_files
        card["splits_by_video"] = {sp: sorted(v for v, s in splits.items() if s == sp) for sp in SPLITS}
        # Imported here: only this last step writes the index (and, in _finish_card, the card's plots).
        from pvtt.pack.dataset_index import build_dataset_index

        st = build_dataset_index(
            tmp / INDEX, work, base_index=work / "index.sqlite", pairs=pairs, synth_docs=synth_docs, scores=scores,
            decisions=decisions, pairs_summary=pairs_summary, packed=packed, shards=tar_info,
            rejects=sources, stage_params={**(stage_params or {}), STAGE: params_read})
        _finish_card(tmp, card, st, stage_params)
        write_json(tmp / "card.json", card)
        write_json(tmp / "splits.json", split_keys)
        write_jsonl(tmp / "rejects.jsonl", all_rejects)
        inputs = [pairs_dir, *sorted(map(str, filter_dirs))] + ([review_dir] if review_dir is not None else [])
        counts = {"samples": len(packed), **{sp: len(split_keys[sp]) for sp in SPLITS},
                  "shards": sum(len(v) for v in shard_files.values()), "rejected": len(rejects)}
        write_manifest(tmp, "dataset", params_read, inputs, counts)
    log.info("packed %d samples (%s), %d rejected by pack", len(packed),
             ", ".join(f"{sp} {len(split_keys[sp])}" for sp in SPLITS), len(rejects))
    return card


def main(argv: list[str] | None = None) -> None:
    cli.setup_logging()
    ap = cli.parser("Pack kept pairs into WebDataset shards split by source video, with a dataset card.")
    ap.add_argument("--work", required=True, help="work directory (pair paths are relative to it)")
    ap.add_argument("--pairs-dir", required=True, help="work/pairs (shard-*.json)")
    ap.add_argument("--synth", nargs="+", required=True, help="synth shard directories")
    ap.add_argument("--filter", nargs="+", required=True, help="filter shard directories (scores.json)")
    ap.add_argument("--review", default=None, help="review directory (decisions.json); L3 verdicts applied")
    ap.add_argument("--out", required=True, help="output directory (artifacts/dataset)")
    ap.add_argument("--stage-params", type=json.loads, default=None,
                    help="JSON {stage: params it read} of the dataset rules, recorded in the dataset index")
    a = ap.parse_args(argv)
    run(a.params, a.work, a.pairs_dir, a.synth, a.filter, a.review, a.out, a.stage_params)


if __name__ == "__main__":
    main()
