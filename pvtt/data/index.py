"""Index stage: every per-video and per-product metadata file -> one SQLite database.

Reads ``<work>/raw/<b>/<v>/info.json``, ``<work>/shots/<b>/<v>/shots.json``,
``<work>/clips/<b>/<v>/clips.json`` (``<b>``: the video's batch, :mod:`pvtt.data.vbatch`),
``<work>/products/<p>/product.json`` and every
``rejects.jsonl`` under those directories, and writes ``index.sqlite`` (built in a temporary
file, renamed into place). File paths stored in the index are relative to ``<work>``.

Tables (see ``SCHEMA``): videos, shots, clips, products, views, rejects. Later stages read
it with :func:`open_index` and the small query helpers :func:`clips`, :func:`products`,
:func:`rejects_by_stage`.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from genbuild import stage as cli
from genbuild.io.atomic import atomic_path
from genbuild.io.jsonio import read_json, read_jsonl
from pvtt.data import vbatch

log = logging.getLogger("pvtt.data.index")

SCHEMA = """
CREATE TABLE videos(
  id TEXT PRIMARY KEY, status TEXT NOT NULL, reason TEXT, source TEXT, path TEXT, sha256 TEXT,
  category TEXT, caption TEXT, product_id TEXT,
  width INTEGER, height INTEGER, fps REAL, n_frames INTEGER, duration REAL, codec TEXT,
  shots_status TEXT, n_shots INTEGER, clips_status TEXT, n_clips INTEGER);
CREATE TABLE shots(
  video TEXT NOT NULL, idx INTEGER NOT NULL, start_frame INTEGER, end_frame INTEGER,
  start_time REAL, end_time REAL, PRIMARY KEY(video, idx));
CREATE TABLE clips(
  id TEXT PRIMARY KEY, video TEXT NOT NULL, shot INTEGER, path TEXT NOT NULL,
  n_frames INTEGER, fps REAL, width INTEGER, height INTEGER, duration REAL,
  src_start_frame INTEGER, src_n_frames INTEGER, src_start_time REAL, src_fps REAL, src_fps_exact TEXT,
  src_width INTEGER, src_height INTEGER, crop_x INTEGER, crop_y INTEGER, crop_w INTEGER, crop_h INTEGER);
CREATE TABLE products(
  id TEXT PRIMARY KEY, status TEXT NOT NULL, reason TEXT, backend TEXT, category TEXT, name TEXT,
  caption TEXT, n_views INTEGER);
CREATE TABLE views(
  product TEXT NOT NULL, view TEXT NOT NULL, path TEXT NOT NULL, source TEXT, width INTEGER, height INTEGER,
  aspect REAL, alpha_frac REAL, status TEXT NOT NULL, PRIMARY KEY(product, view));
CREATE TABLE rejects(
  stage TEXT NOT NULL, item TEXT NOT NULL, reason TEXT NOT NULL, kind TEXT NOT NULL,
  owner TEXT, file TEXT, details TEXT);
CREATE INDEX videos_status ON videos(status);
CREATE INDEX videos_category ON videos(category);
CREATE INDEX shots_video ON shots(video);
CREATE INDEX clips_video ON clips(video, shot);
CREATE INDEX products_category ON products(category);
CREATE INDEX views_product ON views(product);
CREATE INDEX rejects_stage ON rejects(stage, kind);
CREATE INDEX rejects_item ON rejects(item);
"""

VIDEO_COLS = ("id", "status", "reason", "source", "path", "sha256", "category", "caption", "product_id",
              "width", "height", "fps", "n_frames", "duration", "codec",
              "shots_status", "n_shots", "clips_status", "n_clips")
CLIP_COLS = ("id", "video", "shot", "path", "n_frames", "fps", "width", "height", "duration",
             "src_start_frame", "src_n_frames", "src_start_time", "src_fps", "src_fps_exact",
             "src_width", "src_height", "crop_x", "crop_y", "crop_w", "crop_h")
PRODUCT_COLS = ("id", "status", "reason", "backend", "category", "name", "caption", "n_views")
VIEW_COLS = ("product", "view", "path", "source", "width", "height", "aspect", "alpha_frac", "status")
REJECT_KEYS = ("stage", "item", "reason")


def reason_kind(reason: str) -> str:
    """The reason's category: the text before the first ':' (as Rejects.by_reason groups)."""
    return str(reason).split(":")[0].strip()


def _read(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (index needs every listed item's stage outputs)")
    return read_json(path)


def _insert(conn: sqlite3.Connection, table: str, cols: tuple[str, ...], rows: Iterable[tuple]) -> None:
    conn.executemany(f"INSERT INTO {table} ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})", rows)


def _rejects_rows(work: Path, directory: Path, owner: str, stage: str | None = None) -> list[tuple]:
    rows = []
    stage = stage or directory.parent.name
    for f in sorted(directory.rglob("rejects.jsonl")):
        for r in read_jsonl(f):
            details = {k: v for k, v in r.items() if k not in REJECT_KEYS}
            rows.append((str(r.get("stage") or stage), str(r.get("item") or owner),
                         str(r.get("reason") or ""), reason_kind(r.get("reason") or ""), owner,
                         f.relative_to(work).as_posix(), json.dumps(details, sort_keys=True)))
    return rows


def create_db(path: Path, *schemas: str) -> sqlite3.Connection:
    """A new SQLite file for one build (no journal: it is written to a temp path and renamed)."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    for schema in schemas:
        conn.executescript(schema)
    return conn


def build_index(work: str | Path, videos: list[str], products_ids: list[str], out: str | Path, *,
                per_job: int) -> dict:
    """Write the SQLite index of ``videos`` and ``products_ids`` under ``work`` to ``out``; return counts.

    ``per_job``: ``data.videos_per_job``, which places each video's directories (its batch)."""
    work = Path(work)
    videos, products_ids = sorted(set(videos)), sorted(set(products_ids))
    layout = vbatch.Layout(videos, per_job)
    with atomic_path(out) as tmp:
        conn = create_db(tmp, SCHEMA)
        try:
            for i, v in enumerate(videos):
                info = _read(layout.dir(work, "raw", v) / "info.json")
                shots = _read(layout.dir(work, "shots", v) / "shots.json")
                clips_js = _read(layout.dir(work, "clips", v) / "clips.json")
                pr = info.get("probe") or {}
                clip_list = sorted(clips_js.get("clips") or [], key=lambda c: c["id"])
                shot_list = sorted(shots.get("shots") or [], key=lambda s: s["index"])
                _insert(conn, "videos", VIDEO_COLS, [(
                    v, info.get("status"), info.get("reason"), info.get("source"),
                    f"{layout.rel('raw', v)}/video.mp4" if info.get("status") == "ok" else None, info.get("sha256"),
                    info.get("category"), info.get("caption"), info.get("product_id"),
                    pr.get("width"), pr.get("height"), pr.get("fps"), pr.get("n_frames"), pr.get("duration"),
                    pr.get("codec"), shots.get("status"), len(shot_list), clips_js.get("status"), len(clip_list))])
                _insert(conn, "shots", ("video", "idx", "start_frame", "end_frame", "start_time", "end_time"),
                        [(v, s["index"], s["start_frame"], s["end_frame"], s.get("start_time"), s.get("end_time"))
                         for s in shot_list])
                rows = []
                for c in clip_list:
                    crop = list(c.get("crop") or [None] * 4)
                    rows.append((c["id"], c.get("video", v), c.get("shot"), f"{layout.rel('clips', v)}/{c['path']}",
                                 c.get("n_frames"), c.get("fps"), c.get("width"), c.get("height"), c.get("duration"),
                                 c.get("src_start_frame"), c.get("src_n_frames"), c.get("src_start_time"),
                                 c.get("src_fps"), c.get("src_fps_exact"), c.get("src_width"), c.get("src_height"),
                                 *crop))
                _insert(conn, "clips", CLIP_COLS, rows)
                for stage_dir in ("raw", "shots", "clips"):
                    d = layout.dir(work, stage_dir, v)
                    if d.is_dir():
                        _insert(conn, "rejects", ("stage", "item", "reason", "kind", "owner", "file", "details"),
                                _rejects_rows(work, d, v, stage_dir))
                if (i + 1) % 100 == 0 or i + 1 == len(videos):
                    log.info("indexed %d/%d videos", i + 1, len(videos))
            for p in products_ids:
                prod = _read(work / "products" / p / "product.json")
                views = sorted(prod.get("views") or [], key=lambda x: x["view"])
                _insert(conn, "products", PRODUCT_COLS, [(
                    p, prod.get("status"), prod.get("reason"), prod.get("backend"), prod.get("category"),
                    prod.get("name"), prod.get("caption"), len(views))])
                _insert(conn, "views", VIEW_COLS, [(
                    p, x["view"], f"products/{p}/{x['path']}", x.get("source"), x.get("width"), x.get("height"),
                    x.get("aspect"), x.get("alpha_frac"), x.get("status", "ok")) for x in views])
                _insert(conn, "rejects", ("stage", "item", "reason", "kind", "owner", "file", "details"),
                        _rejects_rows(work, work / "products" / p, p))
            log.info("indexed %d products", len(products_ids))
            conn.commit()
            counts = summary(conn)
        finally:
            conn.close()
    log.info("index %s: %s", out, json.dumps(counts, sort_keys=True))
    return counts


# ----------------------------------------------------------------------------- queries

def open_index(path: str | os.PathLike, readonly: bool = True) -> sqlite3.Connection:
    """Open the index (read-only by default); rows come back as sqlite3.Row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: index not found (run the index stage first)")
    conn = sqlite3.connect(f"file:{path.as_posix()}?mode=ro", uri=True) if readonly else sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    return conn


def _dicts(conn: sqlite3.Connection, sql: str, args: tuple = ()) -> list[dict]:
    cur = conn.execute(sql, args)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, tuple(r))) for r in cur.fetchall()]


def clips(conn: sqlite3.Connection, video: str | None = None) -> list[dict]:
    """Clip records sorted by id, shaped like clips.json entries ("crop": [x, y, w, h]) but with
    "path" relative to the work directory; only ``video``'s clips when given."""
    sql = f"SELECT {', '.join(CLIP_COLS)} FROM clips"
    rows = _dicts(conn, sql + (" WHERE video = ? ORDER BY id" if video else " ORDER BY id"), (video,) if video else ())
    for r in rows:
        r["crop"] = [r.pop("crop_x"), r.pop("crop_y"), r.pop("crop_w"), r.pop("crop_h")]
    return rows


def videos(conn: sqlite3.Connection, status: str | None = None) -> list[dict]:
    """Video records sorted by id (only those with ``status`` when given)."""
    sql = f"SELECT {', '.join(VIDEO_COLS)} FROM videos"
    return _dicts(conn, sql + (" WHERE status = ? ORDER BY id" if status else " ORDER BY id"), (status,) if status else ())


def products(conn: sqlite3.Connection, status: str | None = None) -> list[dict]:
    """Product records sorted by id, each with "views": [view records sorted by view]."""
    sql = f"SELECT {', '.join(PRODUCT_COLS)} FROM products"
    prods = _dicts(conn, sql + (" WHERE status = ? ORDER BY id" if status else " ORDER BY id"), (status,) if status else ())
    by_id = {p["id"]: {**p, "views": []} for p in prods}
    for v in _dicts(conn, f"SELECT {', '.join(VIEW_COLS)} FROM views ORDER BY product, view"):
        if v["product"] in by_id:
            by_id[v["product"]]["views"].append(v)
    return [by_id[p["id"]] for p in prods]


def rejects_by_stage(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """{stage: {reason kind: count}} (kind = the reason's text before the first ':')."""
    out: dict[str, dict[str, int]] = {}
    for stage, kind, n in conn.execute("SELECT stage, kind, COUNT(*) FROM rejects GROUP BY stage, kind ORDER BY stage, kind"):
        out.setdefault(stage, {})[kind] = n
    return out


def summary(conn: sqlite3.Connection) -> dict:
    """Counts of every table and of ok items, and the rejects by stage and reason."""
    one = lambda sql: conn.execute(sql).fetchone()[0]
    return {
        "videos": one("SELECT COUNT(*) FROM videos"),
        "videos_ok": one("SELECT COUNT(*) FROM videos WHERE status = 'ok'"),
        "shots": one("SELECT COUNT(*) FROM shots"),
        "clips": one("SELECT COUNT(*) FROM clips"),
        "products": one("SELECT COUNT(*) FROM products"),
        "products_ok": one("SELECT COUNT(*) FROM products WHERE status = 'ok'"),
        "views": one("SELECT COUNT(*) FROM views"),
        "rejects": one("SELECT COUNT(*) FROM rejects"),
        "rejects_by_stage": rejects_by_stage(conn),
    }


def main(argv: list[str] | None = None) -> None:
    cli.setup_logging()
    ap = cli.parser("Collect every per-video and per-product metadata file into one SQLite index.")
    ap.add_argument("--work", required=True, help="work directory holding raw/, shots/, clips/ (per batch), products/")
    ap.add_argument("--videos", nargs="*", default=[], help="video ids")
    ap.add_argument("--products", nargs="*", default=[], help="product ids")
    ap.add_argument("--out", required=True, help="output SQLite file, e.g. work/index.sqlite")
    args = ap.parse_args(argv)
    build_index(args.work, args.videos, args.products, args.out, per_job=vbatch.per_job(args.params))


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
