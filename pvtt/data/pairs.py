"""Pairs: kept clips x other products' views -> candidate edit pairs, assigned to shards.

A candidate is (kept clip, view of a product other than the clip's own). It passes the
rationality filter, checked in this order and counted per first failing reason, when

* ``incompatible_category``: the new product's category may replace the clip's category
  (``pairs.compatible``);
* ``view``: the reference view is one a template may show (``pairs.allowed_views``; null
  allows every view; e.g. leave out ``back`` / ``top`` shots of a catalogue);
* ``aspect_change``: the view's aspect ratio is within ``pairs.max_aspect_change`` of the
  original product's median bbox aspect in the clip (a tall bottle does not replace a
  flat box). Per clip at most
``pairs.products_per_clip`` products are kept, ranked by sha256(seed, clip, product), each
with one view ranked the same way, so adding a product never reshuffles the others.

Pairs go to a fixed number of shards (``num_shards``, computed from params and the number
of videos at DAG-parse time) by the hash of the pair id, so that the DAG grows with videos
and shards, never with pairs.

Outputs (``--out`` directory, written atomically)::

    shard-0000.json ... shard-{S-1:04d}.json   {"shard": i, "pairs": [pair, ...]}  (sorted by id)
    summary.json                               counts: candidates, kept, rejected_by_reason, per_shard
    rejects.jsonl                              video/clip/view-level failures (stage "pairs")

Per-pair filter rejections are counted in ``summary.json`` (there are many), not listed.
"""
from __future__ import annotations

import hashlib
import logging
import math
import sqlite3
import sys
from pathlib import Path
from typing import Any

import numpy as np

from genbuild import stage as cli
from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import read_json, write_json
from genbuild.io.rejects import Rejects
from pvtt.data import vbatch

log = logging.getLogger(__name__)

STAGE = "pairs"
PAIR_FIELDS = ("id", "clip", "video", "shot", "product", "view", "source_product", "category_from",
               "category_to", "clip_path", "mask_path", "background_path", "reference_path", "caption")
FILTER_REASONS = ("incompatible_category", "view", "aspect_change")


# ----------------------------------------------------------------------------- params

def _pos_int(p: dict, key: str) -> int:
    if key not in p:
        raise ValueError(f"params key 'pairs.{key}' is missing")
    v = p[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"params key 'pairs.{key}' must be an integer >= 1, got {v!r}")
    return v


def validate_pairs_params(pairs_params: Any) -> dict:
    """Check the ``pairs`` subtree; return a normalised copy. Errors name the key."""
    if not isinstance(pairs_params, dict):
        raise ValueError(f"params key 'pairs' must be a mapping, got {type(pairs_params).__name__}")
    p = pairs_params
    out = {k: _pos_int(p, k) for k in ("expected_clips_per_video", "products_per_clip", "pairs_per_shard")}
    if "max_aspect_change" not in p:
        raise ValueError("params key 'pairs.max_aspect_change' is missing")
    mac = p["max_aspect_change"]
    # finite and a float (math.isfinite and float() overflow on an int past 1e308; NaN fails both bounds)
    if isinstance(mac, bool) or not isinstance(mac, (int, float)) or not 1.0 <= mac <= sys.float_info.max:
        raise ValueError(f"params key 'pairs.max_aspect_change' must be a finite number >= 1, got {mac!r}")
    out["max_aspect_change"] = float(mac)
    comp = p.get("compatible")
    if not isinstance(comp, dict) or not comp:
        raise ValueError(f"params key 'pairs.compatible' must be a non-empty mapping category -> [categories], got {comp!r}")
    norm: dict[str, list[str]] = {}
    for cat, targets in comp.items():
        if not isinstance(targets, list) or not all(isinstance(t, str) and t for t in targets):
            raise ValueError(f"params key 'pairs.compatible.{cat}' must be a list of category names, got {targets!r}")
        norm[str(cat)] = sorted(set(targets))
    out["compatible"] = norm
    views = p.get("allowed_views")
    if views is not None and (not isinstance(views, list) or not views
                              or not all(isinstance(v, str) and v for v in views)):
        raise ValueError(f"params key 'pairs.allowed_views' must be null (every view) or a non-empty list of view names, got {views!r}")
    out["allowed_views"] = None if views is None else sorted(set(views))
    return out


def _seed(params: dict) -> int:
    if "seed" not in params:
        raise ValueError("params key 'seed' is missing")
    s = params["seed"]
    if isinstance(s, bool) or not isinstance(s, int):
        raise ValueError(f"params key 'seed' must be an integer, got {s!r}")
    return s


def num_shards(pairs_params: dict, n_videos: int) -> int:
    """Number of pair shards: max(1, ceil(n_videos * clips/video * products/clip / pairs/shard)).

    Pure and cheap: the Snakefile calls it at parse time, so the DAG depends on the number
    of videos and on params only, never on how many pairs survive.
    """
    p = validate_pairs_params(pairs_params)
    if isinstance(n_videos, bool) or not isinstance(n_videos, int) or n_videos < 0:
        raise ValueError(f"n_videos must be a non-negative integer, got {n_videos!r}")
    expected = n_videos * p["expected_clips_per_video"] * p["products_per_clip"]
    return max(1, math.ceil(expected / p["pairs_per_shard"]))


# ----------------------------------------------------------------------------- hashing

def _sha(*parts: Any) -> str:
    return hashlib.sha256("\0".join(str(x) for x in parts).encode("utf-8")).hexdigest()


def shard_of(pair_id: str, n_shards: int) -> int:
    """Shard index of a pair: int(sha256(pair_id)[:8], 16) % n_shards."""
    return int(hashlib.sha256(pair_id.encode("utf-8")).hexdigest()[:8], 16) % n_shards


def pair_id(clip_id: str, product: str, view: Any) -> str:
    return f"{clip_id}__{product}_{view}"


def make_caption(category_from: str, product: dict, video_caption: object) -> str:
    """Instruction caption from the new product's metadata and the source video's caption."""
    # Index values are SQLite's: a caption, name or id typed as a number comes back an int or float.
    what = next((str(v) for v in (product.get("caption"), product.get("name"), product.get("category"))
                 if v is not None and v != ""), str(product["id"])).strip()
    text = f"Replace the {category_from} with {what}"
    vc = ("" if video_caption is None else str(video_caption)).strip()
    return f"{text}; {vc}" if vc else text


# ----------------------------------------------------------------------------- index

def _rows(conn: sqlite3.Connection, sql: str, args: tuple = ()) -> list[dict]:
    cur = conn.execute(sql, args)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def open_index(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: index not found (run the index stage first)")
    return sqlite3.connect(f"file:{path.as_posix()}?mode=ro", uri=True)


def _median_aspect(bboxes: list) -> float | None:
    asp = []
    for b in bboxes or []:
        if b is None or len(b) != 4:
            continue
        x0, y0, x1, y1 = (float(v) for v in b)
        w, h = x1 - x0, y1 - y0
        if w > 0 and h > 0:
            asp.append(w / h)
    return float(np.median(asp)) if asp else None


def _view_aspect(v: dict) -> float | None:
    a = v.get("aspect")
    if a is not None and float(a) > 0:
        return float(a)
    w, h = v.get("width"), v.get("height")
    if w and h and float(w) > 0 and float(h) > 0:
        return float(w) / float(h)
    return None


# ----------------------------------------------------------------------------- build

def _read_index(work: Path) -> tuple[dict[str, dict], list[dict], dict[str, dict], dict[str, list[dict]]]:
    """Products, views, videos and clips by video from ``work/index.sqlite``.

    Everything is read up front so the read-only connection is closed before the file checks
    and the pairing loops, which then run over plain rows in the index's sorted order.
    """
    conn = open_index(work / "index.sqlite")
    try:
        products = {r["id"]: r for r in _rows(conn, "SELECT id, status, category, name, caption FROM products ORDER BY id")}
        view_rows = _rows(conn, "SELECT product, view, path, width, height, aspect, status FROM views ORDER BY product, view")
        video_rows = {r["id"]: r for r in _rows(conn, "SELECT id, status, category, caption, product_id FROM videos ORDER BY id")}
        clip_rows: dict[str, list[dict]] = {}
        for r in _rows(conn, "SELECT id, video, shot, path, n_frames, fps, width, height FROM clips ORDER BY id"):
            clip_rows.setdefault(r["video"], []).append(r)
    finally:
        conn.close()
    return products, view_rows, video_rows, clip_rows


def _usable_views(work: Path, products: dict[str, dict], view_rows: list[dict],
                  rejects: Rejects) -> dict[str, list[dict]]:
    """Usable views of usable products, in sorted order, with their aspect resolved.

    A view that can never be a reference (no category, no aspect, no file) is rejected once
    here rather than silently skipped once per clip in the candidate loop.
    """
    views_by_product: dict[str, list[dict]] = {}
    for v in view_rows:
        pid = v["product"]
        prod = products.get(pid)
        if prod is None or prod.get("status") != "ok" or v.get("status") != "ok":
            continue
        item = f"{pid}/{v['view']}"
        if not prod.get("category"):
            rejects.add(item, "product_without_category")
            continue
        aspect = _view_aspect(v)
        if aspect is None:
            rejects.add(item, "view_without_aspect")
            continue
        if not v.get("path") or not (work / v["path"]).is_file():
            rejects.add(item, "missing_reference_file", path=v.get("path"))
            continue
        views_by_product.setdefault(pid, []).append({**v, "aspect": aspect})
    return views_by_product


def _clip_aspect(work: Path, layout: vbatch.Layout, vid: str, cid: str, crow: dict | None, mstats: dict,
                 rejects: Rejects) -> tuple[str, str, float] | None:
    """(mask path, background path, median product bbox aspect) of a kept clip, or None after
    rejecting it: a clip is only worth pairing when its mask, background and bbox all exist."""
    if crow is None:
        rejects.add(cid, "clip_not_indexed", video=vid)
        return None
    mask_rel = f"{layout.rel('masks', vid)}/{cid}.npy.gz"
    bg_rel = f"{layout.rel('backgrounds', vid)}/{cid}.mp4"
    if not (work / mask_rel).is_file():
        rejects.add(cid, "missing_mask", path=mask_rel)
        return None
    if not (work / bg_rel).is_file():
        rejects.add(cid, "missing_background", path=bg_rel)
        return None
    cstats = (mstats.get("clips") or {}).get(cid)
    aspect_from = _median_aspect((cstats or {}).get("bbox"))
    if aspect_from is None:
        rejects.add(cid, "no_product_bbox", video=vid)
        return None
    return mask_rel, bg_rel, aspect_from


def _rational_views(candidates: list[tuple[str, str, list[dict]]], source_product: Any, allowed: set[str],
                    aspect_from: float, pp: dict, tally: dict) -> dict[str, list[dict]]:
    """The rationality filter for one clip: product -> views that pass, in candidate order.

    Rejections are only counted (into ``tally``), per first failing reason in FILTER_REASONS
    order, because there are far too many to list in rejects.jsonl.
    """
    counts = tally["filtered"]
    rational: dict[str, list[dict]] = {}
    for pid, cat_to, views in candidates:
        if pid == source_product:
            tally["own_product_excluded"] += len(views)
            continue
        for v in views:
            tally["candidates"] += 1
            if cat_to not in allowed:
                counts["incompatible_category"] += 1
                continue
            if pp["allowed_views"] is not None and str(v["view"]) not in pp["allowed_views"]:
                counts["view"] += 1
                continue
            ratio = v["aspect"] / aspect_from
            if max(ratio, 1.0 / ratio) > pp["max_aspect_change"]:
                counts["aspect_change"] += 1
                continue
            tally["rational"] += 1
            rational.setdefault(pid, []).append(v)
    return rational


def _chosen_views(rational: dict[str, list[dict]], seed: int, cid: str,
                  products_per_clip: int) -> list[tuple[str, dict]]:
    """(product, view) pairs kept for one clip, sorted by product.

    Products and views are ranked by sha256(seed, clip, product[, view]), not by position, so
    adding a product to the catalogue never reshuffles the choices made for the others.
    """
    chosen = sorted(rational, key=lambda p: (_sha(seed, cid, p), p))[:products_per_clip]
    return [(pid, min(rational[pid], key=lambda r: (_sha(seed, cid, pid, r["view"]), str(r["view"]))))
            for pid in sorted(chosen)]


def _video_pairs(work: Path, layout: vbatch.Layout, vid: str, vrow: dict | None, clips: list[dict], products: dict[str, dict],
                 candidates: list[tuple[str, str, list[dict]]], pp: dict, seed: int, rejects: Rejects,
                 tally: dict) -> list[dict]:
    """The pairs of one video's kept clips, in clip then product order.

    Video-level failures (not indexed / not ok, mask outputs missing, unknown source category)
    are rejected before any candidate is counted, so the summary's counts cover only clips that
    could have been paired.
    """
    if vrow is None:
        rejects.add(vid, "video_not_indexed")
        return []
    if vrow.get("status") != "ok":
        rejects.add(vid, "video_not_ok", status=vrow.get("status"))
        return []
    qc_path = layout.dir(work, "maskqc", vid) / "qc.json"
    masks_json = layout.dir(work, "masks", vid) / "masks.json"
    try:
        qc = read_json(qc_path)
        mstats = read_json(masks_json)
    except (OSError, ValueError) as e:
        rejects.add(vid, "missing_mask_outputs", error=f"{e.__class__.__name__}: {e}")
        return []
    kept = sorted(c for c, rec in (qc.get("clips") or {}).items() if isinstance(rec, dict) and rec.get("kept"))
    indexed = {c["id"]: c for c in clips}
    source_product = vrow.get("product_id")
    category_from = vrow.get("category") or (products.get(source_product) or {}).get("category")
    if not category_from:
        for c in kept:
            rejects.add(c, "unknown_source_category", video=vid)
        return []
    allowed = set(pp["compatible"].get(category_from, []))

    pairs: list[dict] = []
    for cid in kept:
        crow = indexed.get(cid)
        clip = _clip_aspect(work, layout, vid, cid, crow, mstats, rejects)
        if clip is None:
            continue
        mask_rel, bg_rel, aspect_from = clip
        tally["clips_considered"] += 1
        rational = _rational_views(candidates, source_product, allowed, aspect_from, pp, tally)
        if not rational:
            rejects.add(cid, "no_compatible_product", video=vid, category=category_from)
            continue
        tally["clips_paired"] += 1
        for pid, v in _chosen_views(rational, seed, cid, pp["products_per_clip"]):
            prod = products[pid]
            pairs.append({
                "id": pair_id(cid, pid, v["view"]),
                "clip": cid,
                "video": vid,
                "shot": crow.get("shot"),
                "product": pid,
                "view": v["view"],
                "source_product": source_product,
                "category_from": category_from,
                "category_to": prod["category"],
                "clip_path": crow["path"],
                "mask_path": mask_rel,
                "background_path": bg_rel,
                "reference_path": v["path"],
                "caption": make_caption(category_from, prod, vrow.get("caption")),
            })
    return pairs


def _assign_shards(pairs: list[dict], n_shards: int) -> list[list[dict]]:
    """Pairs per shard by hash of the pair id, each shard sorted by id: a pair's shard never
    depends on which other pairs exist, so shard contents stay stable as inputs grow."""
    shards: list[list[dict]] = [[] for _ in range(n_shards)]
    for p in pairs:
        shards[shard_of(p["id"], n_shards)].append(p)
    for s in shards:
        s.sort(key=lambda p: p["id"])
    return shards


def _summary(videos: list[str], pairs: list[dict], shards: list[list[dict]], tally: dict, rejects: Rejects,
             pp: dict, seed: int, n_shards: int) -> dict:
    """summary.json: the per-pair filter rejections exist only as these counts (pack and the
    dataset index read them from here), so every total of the build is recorded."""
    return {
        "videos": len(videos),
        "clips_considered": tally["clips_considered"],
        "clips_paired": tally["clips_paired"],
        "candidates": tally["candidates"],
        "own_product_excluded": tally["own_product_excluded"],
        "rational": tally["rational"],
        "kept": len(pairs),
        "not_selected": tally["rational"] - len(pairs),
        "rejected_by_reason": dict(sorted(tally["filtered"].items())),
        "rejects_by_reason": rejects.by_reason(),
        "num_shards": n_shards,
        "per_shard": [len(s) for s in shards],
        "products_per_clip": pp["products_per_clip"],
        "seed": seed,
    }


def build_pairs(work: str | Path, videos: list[str], params: dict, n_shards: int) -> tuple[list[list[dict]], dict, Rejects]:
    """Return (pairs per shard, summary, rejects) for ``videos`` under ``work``."""
    work = Path(work)
    seed = _seed(params)
    pp = validate_pairs_params(params.get("pairs"))
    if isinstance(n_shards, bool) or not isinstance(n_shards, int) or n_shards < 1:
        raise ValueError(f"num_shards must be an integer >= 1, got {n_shards!r}")
    rejects = Rejects(STAGE)
    videos = sorted(set(videos))
    layout = vbatch.Layout.from_params(videos, params)  # each video's masks/maskqc/backgrounds directory

    products, view_rows, video_rows, clip_rows = _read_index(work)
    views_by_product = _usable_views(work, products, view_rows, rejects)
    # (product, its category, its usable views) in sorted product order: the candidates of every clip
    candidates = [(pid, products[pid]["category"], views_by_product[pid]) for pid in sorted(views_by_product)]

    tally = {"filtered": {r: 0 for r in FILTER_REASONS}, "candidates": 0, "own_product_excluded": 0,
             "rational": 0, "clips_considered": 0, "clips_paired": 0}
    pairs: list[dict] = []
    for vid in videos:
        pairs += _video_pairs(work, layout, vid, video_rows.get(vid), clip_rows.get(vid, []), products, candidates, pp,
                              seed, rejects, tally)

    shards = _assign_shards(pairs, n_shards)
    summary = _summary(videos, pairs, shards, tally, rejects, pp, seed, n_shards)
    return shards, summary, rejects


def write_outputs(out: str | Path, shards: list[list[dict]], summary: dict, rejects: Rejects) -> None:
    with atomic_path(out, directory=True) as tmp:
        for i, s in enumerate(shards):
            write_json(tmp / f"shard-{i:04d}.json", {"shard": i, "pairs": s})
        write_json(tmp / "summary.json", summary)
        rejects.write(tmp / "rejects.jsonl")


def main(argv: list[str] | None = None) -> None:
    cli.setup_logging()
    ap = cli.parser("Pairs: kept clips x other products' views -> rational candidate pairs in shards")
    ap.add_argument("--work", required=True, help="work directory (holds index.sqlite, maskqc/, masks/, backgrounds/)")
    ap.add_argument("--videos", nargs="*", default=[], help="video ids to pair")
    ap.add_argument("--num-shards", type=int, required=True, help="number of shard files to write")
    ap.add_argument("--out", required=True, help="output directory")
    args = ap.parse_args(argv)
    expected = num_shards(args.params.get("pairs"), len(set(args.videos)))
    if expected != args.num_shards:
        log.warning("--num-shards %d differs from num_shards(params, %d videos) = %d",
                    args.num_shards, len(set(args.videos)), expected)
    shards, summary, rejects = build_pairs(args.work, args.videos, args.params, args.num_shards)
    write_outputs(args.out, shards, summary, rejects)
    log.info("pairs: %d videos, %d clips, %d candidates, %d rational, %d kept in %d shards; filtered %s; %d rejects",
             summary["videos"], summary["clips_considered"], summary["candidates"], summary["rational"],
             summary["kept"], args.num_shards, summary["rejected_by_reason"], len(rejects))


if __name__ == "__main__":
    main()
