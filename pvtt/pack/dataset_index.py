"""The dataset index: one SQLite file in the packed dataset that answers what, how many, and from where.

The pack stage (which sees every stage's outputs) writes ``<dataset>/index.sqlite``. It holds
the first index's tables (``pvtt.data.index.SCHEMA``: videos, shots, clips, products, views,
rejects), copied from ``work/index.sqlite``, with ``rejects`` refilled from every stage, and:

* ``video_sources``  video -> source path/URL in its manifest, the source file's sha256, the shot detector
* ``clip_outputs``   clip -> mask file and masks backend, mask-QC verdict and numbers, background file and backend
* ``pairs``          every pair the pairs stage made: what it combines, its synth / filter / review outcome
* ``triplets``       every packed sample: pair id, WebDataset key, split, tar, sha256 of its source clip,
                     reference image and edited video
* ``shards``         every tar: split, sample count, sha256
* ``stages``         (stage, item) -> status ok | rejected | skipped, reason and its kind, a detail
                     (review: accepted / pending / not_sampled; pack: the split): survivors and rejects
* ``stage_counts``   counts that exist only as totals (the pairs stage's per-candidate filter)
* ``params``         stage -> the params it read (JSON), as the rules passed them
* ``backends``       (stage, backend) -> items it made
* ``meta``           schema version, the pairs summary, the review decisions' counts

Every table is written in sorted order into a fresh file that is renamed into place, so the
same inputs give the same bytes (with the same SQLite library).

Queries: :func:`stats` (counts per category, survivors / rejects by reason per stage) and
:func:`lineage` (one triplet back to its raw video); ``python -m pvtt data`` prints both.
"""
from __future__ import annotations

import difflib
import json
import logging
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import read_json
from pvtt.data import vbatch
from pvtt.data.index import SCHEMA, _dicts, _insert, create_db, open_index, reason_kind

log = logging.getLogger("pvtt.pack.dataset_index")

SCHEMA_VERSION = 1
# Stage order of the build and the unit each stage's survivors are counted in.
STAGES = (("ingest", "videos"), ("shots", "videos"), ("clips", "clips"), ("products", "product views"),
          ("masks", "clips"), ("maskqc", "clips"), ("backgrounds", "clips"), ("pairs", "pairs"),
          ("synth", "pairs"), ("filter", "pairs"), ("review", "pairs"), ("pack", "triplets"))
STAGE_ORDER = {s: i for i, (s, _) in enumerate(STAGES)}
UNITS = dict(STAGES)
BASE_TABLES = ("videos", "shots", "clips", "products", "views")
REJECT_COLS = ("stage", "item", "reason", "kind", "owner", "file", "details")

DATASET_SCHEMA = """
CREATE TABLE video_sources(video TEXT PRIMARY KEY, source TEXT, source_sha256 TEXT, shots_detector TEXT);
CREATE TABLE clip_outputs(
  clip TEXT PRIMARY KEY, video TEXT NOT NULL, mask_path TEXT, masks_backend TEXT, maskqc_kept INTEGER,
  maskqc TEXT, background_path TEXT, backgrounds_backend TEXT, bg_filled_from_time_frac REAL);
CREATE TABLE pairs(
  id TEXT PRIMARY KEY, shard TEXT NOT NULL, video TEXT, shot INTEGER, clip TEXT, product TEXT, view TEXT,
  source_product TEXT, category_from TEXT, category_to TEXT, caption TEXT, clip_path TEXT, mask_path TEXT,
  background_path TEXT, reference_path TEXT, synth_status TEXT, route TEXT, edited_path TEXT,
  edited_mask_path TEXT, filter_kept INTEGER, scores TEXT, review TEXT);
CREATE TABLE triplets(
  id TEXT PRIMARY KEY, key TEXT NOT NULL UNIQUE, split TEXT NOT NULL, tar TEXT NOT NULL,
  clip_sha256 TEXT, reference_sha256 TEXT, edited_sha256 TEXT, mask_sha256 TEXT);
CREATE TABLE shards(path TEXT PRIMARY KEY, split TEXT NOT NULL, n_samples INTEGER, sha256 TEXT);
CREATE TABLE stages(
  stage TEXT NOT NULL, seq INTEGER NOT NULL, item TEXT NOT NULL, status TEXT NOT NULL, kind TEXT, reason TEXT,
  detail TEXT, PRIMARY KEY(stage, item));
CREATE TABLE stage_counts(stage TEXT NOT NULL, name TEXT NOT NULL, n INTEGER, PRIMARY KEY(stage, name));
CREATE TABLE params(stage TEXT PRIMARY KEY, json TEXT NOT NULL);
CREATE TABLE backends(stage TEXT NOT NULL, name TEXT NOT NULL, n INTEGER, PRIMARY KEY(stage, name));
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
CREATE INDEX pairs_clip ON pairs(clip);
CREATE INDEX triplets_split ON triplets(split);
CREATE INDEX stages_status ON stages(stage, status);
"""


class UnknownTriplet(KeyError):
    """No triplet (or pair) with that id or key; the message says how to list them."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


# ----------------------------------------------------------------------------- build

def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _copy_base(conn: sqlite3.Connection, base_index: Path | None) -> bool:
    """Copy the first index's tables (sorted) into ``conn``; False when there is none."""
    if base_index is None or not Path(base_index).is_file():
        log.warning("dataset index: no base index (%s): videos, shots, clips, products stay empty", base_index)
        return False
    src = open_index(base_index)
    try:
        for table, order in (("videos", "id"), ("shots", "video, idx"), ("clips", "id"), ("products", "id"),
                             ("views", "product, view")):
            cur = src.execute(f"SELECT * FROM {table} ORDER BY {order}")
            cols = tuple(d[0] for d in cur.description)
            _insert(conn, table, cols, [tuple(r) for r in cur.fetchall()])
    finally:
        src.close()
    return True


def _video_sources(work: Path, video_ids: list[str]) -> list[tuple]:
    rows = []
    raw, shots_dirs = vbatch.scan(work / "raw"), vbatch.scan(work / "shots")  # <stage>/<batch>/<video>/
    for v in video_ids:
        info_f = raw[v] / "info.json" if v in raw else None
        shots_f = shots_dirs[v] / "shots.json" if v in shots_dirs else None
        info = read_json(info_f) if info_f and info_f.is_file() else {}
        shots = read_json(shots_f) if shots_f and shots_f.is_file() else {}
        rows.append((v, info.get("source"), info.get("source_sha256"), shots.get("detector")))
    return rows


def _clip_outputs(work: Path) -> tuple[list[tuple], dict[str, dict[str, str]], dict[str, Counter]]:
    """clip_outputs rows, per-stage {clip: "ok"} survivors, per-stage backend counts."""
    out: dict[str, dict] = {}
    ok: dict[str, dict[str, str]] = {"masks": {}, "maskqc": {}, "backgrounds": {}}
    backends: dict[str, Counter] = {"masks": Counter(), "backgrounds": Counter()}
    for stage, fname in (("masks", "masks.json"), ("maskqc", "qc.json"), ("backgrounds", "backgrounds.json")):
        for d in vbatch.scan(work / stage).values():
            f = d / fname
            if not f.is_file():
                continue
            for cid, rec in sorted((read_json(f).get("clips") or {}).items()):
                if not isinstance(rec, dict):
                    continue
                row = out.setdefault(cid, {"video": d.name})
                if stage == "masks":
                    row["mask_path"] = f"{d.relative_to(work).as_posix()}/{rec.get('path', cid + '.npy.gz')}"
                    row["masks_backend"] = rec.get("backend")
                    backends["masks"][str(rec.get("backend"))] += 1
                    ok["masks"][cid] = "ok"
                elif stage == "maskqc":
                    row["maskqc_kept"] = int(bool(rec.get("kept")))
                    row["maskqc"] = _json(rec)
                    ok["maskqc"][cid] = "ok" if rec.get("kept") else "rejected"
                else:
                    row["background_path"] = f"{d.relative_to(work).as_posix()}/{rec.get('path', cid + '.mp4')}"
                    row["backgrounds_backend"] = rec.get("backend")
                    row["bg_filled_from_time_frac"] = rec.get("filled_from_time_frac")
                    backends["backgrounds"][str(rec.get("backend"))] += 1
                    ok["backgrounds"][cid] = "ok"
    rows = [(cid, r["video"], r.get("mask_path"), r.get("masks_backend"), r.get("maskqc_kept"), r.get("maskqc"),
             r.get("background_path"), r.get("backgrounds_backend"), r.get("bg_filled_from_time_frac"))
            for cid, r in sorted(out.items())]
    return rows, ok, backends


def _review_outcome(pid: str, l3: dict[str, set]) -> str:
    """A kept pair's review outcome; one rule for the pairs table and the stages table so the two agree."""
    return ("rejected" if pid in l3["rejected"] else "accepted" if pid in l3["accepted"]
            else "pending" if pid in l3["sampled"] else "not_sampled")


def _reject_rows(rejects: list[tuple[str | None, dict]]) -> list[tuple]:
    """rejects-table rows (stage, item, reason, kind, owner, file, details), unsorted.

    ``owner`` is the item directory of a per-item rejects.jsonl (work/<stage>/[<batch>/]<item>/), so a
    reject can be traced to the job that wrote it; stage-level files and pack's own have none.
    """
    rrows = []
    for file, r in rejects:
        details = {k: v for k, v in r.items() if k not in ("stage", "item", "reason")}
        owner = Path(file).parent.name if file and Path(file).parent.name != Path(file).parts[0] else None
        rrows.append((str(r.get("stage", "?")), str(r.get("item", "")), str(r.get("reason", "")),
                      reason_kind(r.get("reason", "")), owner, file, _json(details)))
    return rrows


def _pair_rows(pairs: dict[str, dict[str, dict]], synth_status: dict[str, Any], routes: dict[str, Any],
               scores: dict[str, dict], l3: dict[str, set]) -> list[tuple]:
    """pairs-table rows in (shard, id) order: every pair the pairs stage made with its synth,
    filter and review outcome, so a pair that never became a triplet can still be explained."""
    prow = []
    for shard in sorted(pairs):
        for pid, p in sorted(pairs[shard].items()):
            st = synth_status.get(pid)
            ok_synth = isinstance(st, dict) and st.get("status") == "ok"
            sc = scores.get(pid)
            review = None if not sc or not sc.get("kept") else _review_outcome(pid, l3)
            prow.append((pid, shard, p.get("video"), p.get("shot"), p.get("clip"), p.get("product"),
                         p.get("view"), p.get("source_product"), p.get("category_from"), p.get("category_to"),
                         p.get("caption"), p.get("clip_path"), p.get("mask_path"), p.get("background_path"),
                         p.get("reference_path"), st.get("status") if isinstance(st, dict) else None,
                         routes.get(shard) if ok_synth else None,
                         f"synth/{shard}/{pid}/edited.mp4" if ok_synth else None,
                         f"synth/{shard}/{pid}/mask.npy.gz" if ok_synth else None,
                         None if sc is None else int(bool(sc.get("kept"))),
                         None if sc is None else _json({"l1": sc.get("l1"), "l2": sc.get("l2"),
                                                        "reasons": sc.get("reasons", [])}), review))
    return prow


def _survivors(conn: sqlite3.Connection, videos: list[dict], clip_ok: dict[str, dict[str, str]],
               pairs: dict[str, dict[str, dict]], synth_status: dict[str, Any], scores: dict[str, dict],
               packed: list[dict], l3: dict[str, set]) -> dict[str, dict[str, tuple[str, str | None]]]:
    """stage -> {item: (status, detail)} of what each stage produced.

    Stages list only what they reject, so survivors are read from their outputs (the base
    tables already in ``conn``, clip outputs, pairs, synth, scores, review, packed samples).
    """
    ok: dict[str, dict[str, tuple[str, str | None]]] = {s: {} for s, _ in STAGES}
    for v in videos:
        ok["ingest"][v["id"]] = (v["status"] or "?", None)
        if v["status"] == "ok":
            ok["shots"][v["id"]] = (v["shots_status"] or "?", None)
    for (cid,) in conn.execute("SELECT id FROM clips ORDER BY id"):
        ok["clips"][cid] = ("ok", None)
    for pr, vw in conn.execute("SELECT v.product, v.view FROM views v JOIN products p ON p.id = v.product "
                               "WHERE v.status = 'ok' AND p.status = 'ok' ORDER BY 1, 2"):
        ok["products"][f"{pr}/{vw}"] = ("ok", None)
    for stage in ("masks", "maskqc", "backgrounds"):
        ok[stage] = {c: (s, None) for c, s in clip_ok[stage].items()}
    for shard in pairs:
        for pid in pairs[shard]:
            ok["pairs"][pid] = ("ok", None)
    for pid, st in synth_status.items():
        if isinstance(st, dict) and st.get("status") == "ok":
            ok["synth"][pid] = ("ok", None)
    for pid, sc in scores.items():
        ok["filter"][pid] = ("ok" if sc.get("kept") else "rejected", None)
        if sc.get("kept"):
            r = _review_outcome(pid, l3)
            ok["review"][pid] = ("rejected" if r == "rejected" else "ok", r)
    for s in packed:
        ok["pack"][s["id"]] = ("ok", s["split"])
    return ok


def _stage_rows(ok: dict[str, dict[str, tuple[str, str | None]]], rrows: list[tuple]) -> list[tuple]:
    """stages-table rows (stage, seq, item, status, kind, reason, detail) in build order.

    Survivors are overlaid by rejects: a reject always wins (a stage may have written an output
    and then rejected it), and of several reasons for one item the first in sorted order wins.
    """
    status: dict[tuple[str, str], list] = {}
    for stage, items in ok.items():
        for item, (st, detail) in items.items():
            status[(stage, item)] = [st, None, None, detail]
    for stage, item, reason, kind, *_ in sorted(rrows, key=lambda x: tuple(str(v) for v in x), reverse=True):
        row = status.setdefault((stage, item), ["rejected", None, None, None])
        row[0], row[1], row[2] = "rejected", kind, reason   # the first reason (sorted) wins
    return sorted(((st, STAGE_ORDER.get(st, len(STAGES)), it, *v) for (st, it), v in status.items()),
                  key=lambda x: (x[1], x[0], x[2]))


def _stage_counts(pairs_summary: dict | None, decisions: dict | None) -> list[tuple[str, str, int]]:
    """stage_counts rows, sorted: the pairs stage's per-candidate filter and the review decisions
    exist only as totals (their items are never listed), so they are recorded as numbers."""
    counts = []
    if pairs_summary:
        for k in ("candidates", "own_product_excluded", "rational", "kept", "not_selected",
                  "clips_considered", "clips_paired"):
            if k in pairs_summary:
                counts.append(("pairs", k, int(pairs_summary[k])))
        for k, n in sorted((pairs_summary.get("rejected_by_reason") or {}).items()):
            counts.append(("pairs", f"filtered:{k}", int(n)))
    if decisions is not None:
        for k in ("sampled", "accepted", "rejected", "pending"):
            counts.append(("review", k, len(decisions.get(k, []))))
    return sorted(counts)


def _backend_rows(conn: sqlite3.Connection, clip_backends: dict[str, Counter],
                  synth_docs: dict[str, dict]) -> list[tuple[str, str, int]]:
    """(stage, backend, items) rows, sorted.

    Products and shots are counted from tables already written to ``conn`` (so this runs after
    video_sources), masks and backgrounds from their outputs, synth by each shard's route.
    """
    bk: dict[str, Counter] = {"products": Counter(), "shots": Counter(), **clip_backends, "synth": Counter()}
    for (name, n) in conn.execute("SELECT backend, COUNT(*) FROM products WHERE status='ok' GROUP BY backend"):
        bk["products"][str(name)] += n
    for (name, n) in conn.execute("SELECT v.shots_detector, COUNT(*) FROM video_sources v JOIN videos w "
                                  "ON w.id = v.video WHERE w.shots_status = 'ok' GROUP BY 1"):
        bk["shots"][str(name)] += n
    for doc in synth_docs.values():
        n_ok = sum(1 for s in (doc.get("pairs") or {}).values() if isinstance(s, dict) and s.get("status") == "ok")
        if doc.get("route") is not None:
            bk["synth"][str(doc["route"])] += n_ok
    return sorted((st, name, n) for st, c in bk.items() for name, n in c.items())


def _meta_rows(has_base: bool, pairs_summary: dict | None, decisions: dict | None) -> list[tuple[str, str]]:
    """meta rows, sorted: what a reader needs to interpret the rest (schema version, whether the
    base tables are filled) and the pairs summary / review counts that have no table of their own."""
    meta = {"schema_version": str(SCHEMA_VERSION), "has_base_index": "1" if has_base else "0"}
    if pairs_summary is not None:
        meta["pairs_summary"] = _json(pairs_summary)
    if decisions is not None:
        meta["review_decisions"] = _json({k: (len(v) if isinstance(v, list) else v) for k, v in decisions.items()})
    return sorted(meta.items())


def build_dataset_index(out: str | Path, work: str | Path, *, base_index: str | Path | None,
                        pairs: dict[str, dict[str, dict]], synth_docs: dict[str, dict], scores: dict[str, dict],
                        decisions: dict | None, pairs_summary: dict | None,
                        packed: list[dict], shards: list[dict], rejects: list[tuple[str | None, dict]],
                        stage_params: dict[str, Any]) -> dict:
    """Write the dataset index to ``out`` (atomically); return :func:`stats` of it.

    ``pairs``: shard -> {pair id: pair}; ``synth_docs``: shard -> synth.json; ``scores``: pair id -> filter
    scores; ``packed``: one dict per packed sample (id, key, split, tar,
    sha256 of its members); ``shards``: {path, split, n_samples, sha256}; ``rejects``: (file relative to
    the work dir or None, reject row) of every stage; ``stage_params``: stage -> params it read.
    """
    work = Path(work)
    d = decisions or {}
    l3 = {k: set(d.get(k, [])) for k in ("rejected", "accepted", "sampled")}
    with atomic_path(out) as tmp:
        conn = create_db(tmp, SCHEMA, DATASET_SCHEMA)
        try:
            has_base = _copy_base(conn, Path(base_index) if base_index else None)

            # rejects of every stage, sorted
            rrows = _reject_rows(rejects)
            _insert(conn, "rejects", REJECT_COLS, sorted(rrows, key=lambda x: tuple(str(v) for v in x)))

            videos = _dicts(conn, "SELECT id, status, shots_status FROM videos ORDER BY id")
            _insert(conn, "video_sources", ("video", "source", "source_sha256", "shots_detector"),
                    _video_sources(work, [v["id"] for v in videos]))
            clip_rows, clip_ok, clip_backends = _clip_outputs(work)
            _insert(conn, "clip_outputs", ("clip", "video", "mask_path", "masks_backend", "maskqc_kept", "maskqc",
                                           "background_path", "backgrounds_backend", "bg_filled_from_time_frac"),
                    clip_rows)

            # every pair with its downstream outcome
            synth_status = {pid: s for doc in synth_docs.values() for pid, s in (doc.get("pairs") or {}).items()}
            routes = {name: doc.get("route") for name, doc in synth_docs.items()}
            _insert(conn, "pairs", ("id", "shard", "video", "shot", "clip", "product", "view", "source_product",
                                    "category_from", "category_to", "caption", "clip_path", "mask_path",
                                    "background_path", "reference_path", "synth_status", "route", "edited_path",
                                    "edited_mask_path", "filter_kept", "scores", "review"),
                    _pair_rows(pairs, synth_status, routes, scores, l3))
            _insert(conn, "triplets", ("id", "key", "split", "tar", "clip_sha256", "reference_sha256",
                                       "edited_sha256", "mask_sha256"),
                    sorted((s["id"], s["key"], s["split"], s["tar"], s.get("clip_sha256"), s.get("reference_sha256"),
                            s.get("edited_sha256"), s.get("mask_sha256")) for s in packed))
            _insert(conn, "shards", ("path", "split", "n_samples", "sha256"),
                    sorted((s["path"], s["split"], s["n_samples"], s["sha256"]) for s in shards))

            # survivors per stage (from the stage outputs), then every rejected item
            ok = _survivors(conn, videos, clip_ok, pairs, synth_status, scores, packed, l3)
            _insert(conn, "stages", ("stage", "seq", "item", "status", "kind", "reason", "detail"),
                    _stage_rows(ok, rrows))

            _insert(conn, "stage_counts", ("stage", "name", "n"), _stage_counts(pairs_summary, decisions))
            _insert(conn, "params", ("stage", "json"),
                    sorted((st, _json(p)) for st, p in (stage_params or {}).items()))
            _insert(conn, "backends", ("stage", "name", "n"), _backend_rows(conn, clip_backends, synth_docs))
            _insert(conn, "meta", ("key", "value"), _meta_rows(has_base, pairs_summary, decisions))
            conn.commit()
            result = stats(conn)
        finally:
            conn.close()
    log.info("dataset index %s: %d triplets", out, result["triplets"])
    return result


# ----------------------------------------------------------------------------- queries

def _one(conn: sqlite3.Connection, sql: str, args: tuple = ()) -> Any:
    return conn.execute(sql, args).fetchone()[0]


def _counter(conn: sqlite3.Connection, sql: str, args: tuple = ()) -> dict[str, int]:
    return {str(k): int(n) for k, n in conn.execute(sql, args)}


def stats(conn: sqlite3.Connection) -> dict:
    """Counts per category, per split, and per stage: survivors, rejects by reason, backends."""
    stage_list = []
    names = [s for s, _ in STAGES] + sorted(
        {r[0] for r in conn.execute("SELECT DISTINCT stage FROM stages")} - set(STAGE_ORDER))
    for st in names:
        by_status = _counter(conn, "SELECT status, COUNT(*) FROM stages WHERE stage = ? GROUP BY status ORDER BY status",
                             (st,))
        entry = {"stage": st, "unit": UNITS.get(st, "items"), "ok": by_status.get("ok", 0),
                 "rejected": by_status.get("rejected", 0),
                 "rejects_by_reason": _counter(conn, "SELECT kind, COUNT(*) FROM rejects WHERE stage = ? "
                                                     "GROUP BY kind ORDER BY kind", (st,))}
        for k, n in sorted(by_status.items()):
            if k not in ("ok", "rejected"):
                entry[k] = n
        detail = _counter(conn, "SELECT detail, COUNT(*) FROM stages WHERE stage = ? AND status = 'ok' "
                                "AND detail IS NOT NULL GROUP BY detail ORDER BY detail", (st,))
        if detail:
            entry["ok_by"] = detail
        totals = _counter(conn, "SELECT name, n FROM stage_counts WHERE stage = ? ORDER BY name", (st,))
        if totals:
            entry["totals"] = totals
        backends = _counter(conn, "SELECT name, n FROM backends WHERE stage = ? ORDER BY name", (st,))
        if backends:
            entry["backends"] = backends
        stage_list.append(entry)
    return {
        "triplets": _one(conn, "SELECT COUNT(*) FROM triplets"),
        "splits": _counter(conn, "SELECT split, COUNT(*) FROM triplets GROUP BY split ORDER BY split"),
        "shards": _one(conn, "SELECT COUNT(*) FROM shards"),
        "categories": {
            "videos": _counter(conn, "SELECT COALESCE(category, '?'), COUNT(*) FROM videos WHERE status = 'ok' "
                                     "GROUP BY 1 ORDER BY 1"),
            "products": _counter(conn, "SELECT COALESCE(category, '?'), COUNT(*) FROM products WHERE status = 'ok' "
                                       "GROUP BY 1 ORDER BY 1"),
            "triplets_from": _counter(conn, "SELECT COALESCE(p.category_from, '?'), COUNT(*) FROM triplets t "
                                            "JOIN pairs p ON p.id = t.id GROUP BY 1 ORDER BY 1"),
            "triplets_to": _counter(conn, "SELECT COALESCE(p.category_to, '?'), COUNT(*) FROM triplets t "
                                          "JOIN pairs p ON p.id = t.id GROUP BY 1 ORDER BY 1"),
        },
        "stages": stage_list,
    }


def triplet_ids(conn: sqlite3.Connection, split: str | None = None) -> list[dict]:
    """[{id, key, split}] of the packed triplets, sorted by id (only ``split``'s when given)."""
    sql = "SELECT id, key, split FROM triplets"
    return _dicts(conn, sql + (" WHERE split = ? ORDER BY id" if split else " ORDER BY id"), (split,) if split else ())


def _row(conn: sqlite3.Connection, sql: str, args: tuple) -> dict | None:
    rows = _dicts(conn, sql, args)
    return rows[0] if rows else None


def resolve(conn: sqlite3.Connection, ident: str) -> str:
    """The pair id of a triplet given by pair id or WebDataset key (or any pair the pairs stage made)."""
    for sql in ("SELECT id FROM triplets WHERE id = ?", "SELECT id FROM triplets WHERE key = ?",
                "SELECT id FROM pairs WHERE id = ?"):
        r = conn.execute(sql, (ident,)).fetchone()
        if r:
            return r[0]
    known = [r[0] for r in conn.execute("SELECT id FROM pairs ORDER BY id")]
    close = difflib.get_close_matches(ident, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownTriplet(
        f"unknown triplet '{ident}'{hint} (ids are pair ids such as "
        f"'{known[0] if known else 'vid000_s00c0__prod01_view0'}' or WebDataset keys): list them with "
        "`python -m pvtt data ids [--split benchmark]`, or read splits.json in the dataset")


def lineage(conn: sqlite3.Connection, ident: str) -> dict:
    """One triplet (pair id or WebDataset key) back to its raw video: every stage's item, file, hash,
    backend and status, and the params each stage read. Raises :class:`UnknownTriplet`."""
    pid = resolve(conn, ident)
    pair = _row(conn, "SELECT * FROM pairs WHERE id = ?", (pid,))
    trip = _row(conn, "SELECT * FROM triplets WHERE id = ?", (pid,))
    vid, clip_id = pair["video"], pair["clip"]
    video = _row(conn, "SELECT * FROM videos WHERE id = ?", (vid,)) or {"id": vid}
    src = _row(conn, "SELECT source, source_sha256, shots_detector FROM video_sources WHERE video = ?", (vid,)) or {}
    shot = _row(conn, "SELECT idx AS \"index\", start_frame, end_frame, start_time, end_time FROM shots "
                      "WHERE video = ? AND idx = ?", (vid, pair["shot"])) or {"index": pair["shot"]}
    clip = _row(conn, "SELECT * FROM clips WHERE id = ?", (clip_id,)) or {"id": clip_id, "path": pair["clip_path"]}
    if "crop_x" in clip:
        clip["crop"] = [clip.pop("crop_x"), clip.pop("crop_y"), clip.pop("crop_w"), clip.pop("crop_h")]
    outs = _row(conn, "SELECT * FROM clip_outputs WHERE clip = ?", (clip_id,)) or {}
    product = _row(conn, "SELECT id, status, backend, category, name, caption FROM products WHERE id = ?",
                   (pair["product"],)) or {"id": pair["product"]}
    view = _row(conn, "SELECT view, path, source, width, height, aspect, alpha_frac, status FROM views "
                      "WHERE product = ? AND view = ?", (pair["product"], pair["view"])) or {"view": pair["view"]}
    view["path"] = view.get("path") or pair["reference_path"]
    view["sha256"] = trip["reference_sha256"] if trip else None
    stage_items = {"ingest": vid, "shots": vid, "clips": clip_id, "products": f"{pair['product']}/{pair['view']}",
                   "masks": clip_id, "maskqc": clip_id, "backgrounds": clip_id, "pairs": pid, "synth": pid,
                   "filter": pid, "review": pid, "pack": pid}
    chain = []
    for st, item in stage_items.items():
        r = _row(conn, "SELECT status, reason, detail FROM stages WHERE stage = ? AND item = ?", (st, item))
        chain.append({"stage": st, "item": item, **(r or {"status": None, "reason": None, "detail": None})})
    params = {st: json.loads(j) for st, j in conn.execute("SELECT stage, json FROM params ORDER BY stage")}
    scores = json.loads(pair["scores"]) if pair.get("scores") else None
    return {
        "id": pid,
        "packed": trip is not None,
        "key": trip["key"] if trip else None,
        "split": trip["split"] if trip else None,
        "tar": trip["tar"] if trip else None,
        "caption": pair["caption"],
        "categories": {"from": pair["category_from"], "to": pair["category_to"]},
        "video": {"id": vid, "source": src.get("source"), "source_sha256": src.get("source_sha256"),
                  "path": video.get("path"), "sha256": video.get("sha256"), "status": video.get("status"),
                  "category": video.get("category"), "caption": video.get("caption"),
                  "product_id": video.get("product_id"),
                  **{k: video.get(k) for k in ("width", "height", "fps", "n_frames", "duration", "codec")}},
        "shot": {**shot, "detector": src.get("shots_detector")},
        "clip": {**clip, "sha256": trip["clip_sha256"] if trip else None},
        "mask": {"path": outs.get("mask_path") or pair["mask_path"], "backend": outs.get("masks_backend"),
                 "maskqc": json.loads(outs["maskqc"]) if outs.get("maskqc") else None},
        "background": {"path": outs.get("background_path") or pair["background_path"],
                       "backend": outs.get("backgrounds_backend"),
                       "filled_from_time_frac": outs.get("bg_filled_from_time_frac")},
        "product": {**product, "view": view},
        "pair": {"shard": pair["shard"], "source_product": pair["source_product"]},
        "synth": {"status": pair["synth_status"], "route": pair["route"], "edited_path": pair["edited_path"],
                  "edited_sha256": trip["edited_sha256"] if trip else None, "mask_path": pair["edited_mask_path"]},
        "filter": scores,
        "review": pair["review"],
        "backends": {"shots": src.get("shots_detector"), "products": product.get("backend"),
                     "masks": outs.get("masks_backend"), "backgrounds": outs.get("backgrounds_backend"),
                     "synth": pair["route"]},
        "stages": chain,
        "params": params,
    }
