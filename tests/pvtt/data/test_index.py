"""Index stage: real stage outputs (ingest -> shots -> clips per batch of videos, products) into SQLite; scale check."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genbuild.io.jsonio import write_json, write_jsonl
from genbuild.io.video import write_video
from pvtt.data import clips as C
from pvtt.data import index as I
from pvtt.data import ingest, products, shots, vbatch

ROOT = Path(__file__).resolve().parents[3]
PARAMS = {"ingest": {"min_frames": 12},
          "shots": {"detector": "content", "threshold": 27.0, "min_scene_len": 12},
          "clips": {"width": 160, "height": 90, "fps": 24, "min_seconds": 2.0, "max_seconds": 4.0, "trim_frames": 2},
          "video": {"crf": 17, "preset": "ultrafast", "threads": 1},
          "products": {"backend": "white_matting", "white_threshold": 232, "feather": 1, "pad": 4},
          "data": {"videos_per_job": 1}}                       # one video per batch: b0000 = vid000, b0001 = vid001


def two_shot_video(path: Path) -> None:
    """25 fps: a 1.2 s shot (too short for a clip) then a 5.5 s shot; distinct flat colours + moving box."""
    frames = np.zeros((170, 96, 128, 3), np.uint8)
    for i in range(170):
        frames[i] = (200, 40, 40) if i < 30 else (30, 60, 200)
        x = (i * 2) % 100
        frames[i, 40:60, x:x + 20] = 255
    write_video(path, frames, 25)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("idx")
    src = root / "src"
    src.mkdir()
    two_shot_video(src / "a.mp4")
    (src / "broken.mp4").write_bytes(b"garbage" * 100)
    img = np.full((80, 80, 3), 255, np.uint8)
    img[20:60, 30:50] = (90, 20, 20)
    Image.fromarray(img).save(src / "p0.png")
    (src / "bad.png").write_text("nope")
    manifest = src / "manifest.json"
    manifest.write_text(json.dumps({
        "videos": [{"id": "vid000", "path": "a.mp4", "category": "bottle", "caption": "a bottle", "product_id": "prod00"},
                   {"id": "vid001", "path": "broken.mp4", "category": "bag", "caption": "a bag"}],
        "products": [{"id": "prod00", "category": "bottle", "name": "B", "caption": "a red bottle",
                      "views": [{"view": "view0", "path": "p0.png"}, {"view": "view1", "path": "bad.png"}]},
                     {"id": "prod01", "category": "box", "name": "X", "caption": "a box",
                      "views": [{"view": "view0", "path": "bad.png"}]}]}))
    w = root / "work"
    p = ["--params", json.dumps(PARAMS)]
    for b, vid in (("b0000", "vid000"), ("b0001", "vid001")):     # the batch CLIs the rules run
        ingest.main([*p, "--manifest", str(manifest), "--videos", vid, "--out", str(w / "raw" / b)])
        shots.main([*p, "--raw", str(w / "raw" / b), "--videos", vid, "--out", str(w / "shots" / b)])
        C.main([*p, "--raw", str(w / "raw" / b), "--shots", str(w / "shots" / b), "--videos", vid,
                "--out", str(w / "clips" / b)])
    for pid in ("prod00", "prod01"):
        products.run(manifest, pid, w / "products" / pid, PARAMS)
    return w


def test_index_from_real_stage_outputs(work):
    out = work / "index.sqlite"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "index.py"), "--params", json.dumps(PARAMS), "--work", str(work),
                          "--videos", "vid001", "vid000", "--products", "prod00", "prod01", "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert not list(work.glob(".index.sqlite.tmp-*"))
    conn = I.open_index(out)
    try:
        vids = {v["id"]: v for v in I.videos(conn)}
        assert vids["vid000"]["status"] == "ok" and vids["vid000"]["path"] == "raw/b0000/vid000/video.mp4"
        assert (vids["vid000"]["width"], vids["vid000"]["n_frames"], vids["vid000"]["n_shots"]) == (128, 170, 2)
        assert vids["vid000"]["product_id"] == "prod00" and vids["vid000"]["clips_status"] == "ok"
        assert vids["vid001"]["status"] == "rejected" and vids["vid001"]["shots_status"] == "skipped"
        assert vids["vid001"]["clips_status"] == "skipped" and vids["vid001"]["path"] is None
        assert conn.execute("SELECT start_frame FROM shots WHERE video='vid000' AND idx=1").fetchone()[0] in (29, 30, 31)

        cl = I.clips(conn)
        assert [c["id"] for c in cl] == ["vid000_s01c0"] and I.clips(conn, "vid001") == []
        c = cl[0]
        assert (work / c["path"]).is_file() and c["path"] == "clips/b0000/vid000/vid000_s01c0.mp4"
        assert c["crop"] == [0, 12, 128, 72] and c["fps"] == 24.0 and 2.0 <= c["duration"] <= 4.0
        assert C.raw_frame_index(c, 0) == c["src_start_frame"]          # records work with the clips helpers

        prods = I.products(conn)
        assert [p["id"] for p in prods] == ["prod00", "prod01"]
        assert prods[0]["status"] == "ok" and [v["view"] for v in prods[0]["views"]] == ["view0"]
        v0 = prods[0]["views"][0]
        assert (work / v0["path"]).is_file() and v0["status"] == "ok" and v0["aspect"] == pytest.approx(28 / 48, abs=0.05)
        assert prods[1]["status"] == "rejected" and prods[1]["views"] == []
        assert [p["id"] for p in I.products(conn, status="ok")] == ["prod00"]

        assert I.rejects_by_stage(conn) == {"clips": {"shot too short": 1}, "ingest": {"unreadable video": 1},
                                            "products": {"unreadable image": 2}}
        row = conn.execute("SELECT item, owner, file, details FROM rejects WHERE stage='clips'").fetchone()
        assert tuple(row)[:3] == ("vid000_s00", "vid000", "clips/b0000/vid000/rejects.jsonl")
        assert json.loads(row[3])["shot"] == 0
        # the columns later stages query (pvtt/data/pairs.py)
        conn.execute("SELECT id, status, category, caption, product_id FROM videos").fetchall()
        conn.execute("SELECT id, video, shot, path, n_frames, fps, width, height FROM clips").fetchall()
        conn.execute("SELECT id, status, category, name, caption FROM products").fetchall()
        conn.execute("SELECT product, view, path, width, height, aspect, status FROM views").fetchall()
        with pytest.raises(sqlite3.OperationalError):
            conn.execute("INSERT INTO rejects(stage, item, reason, kind) VALUES ('a','b','c','d')")  # read-only
    finally:
        conn.close()
    counts = I.build_index(work, ["vid000", "vid001"], ["prod00", "prod01"], work / "again.sqlite", per_job=1)
    assert counts["videos"] == 2 and counts["videos_ok"] == 1 and counts["clips"] == 1 and counts["rejects"] == 4
    assert counts["products_ok"] == 1 and counts["views"] == 1 and counts["shots"] == 2
    assert (work / "again.sqlite").read_bytes() == out.read_bytes()       # deterministic


def test_missing_stage_output_names_the_file(work, tmp_path):
    with pytest.raises(FileNotFoundError, match="vid777"):
        I.build_index(work, ["vid777"], [], tmp_path / "x.sqlite", per_job=1)
    assert not (tmp_path / "x.sqlite").exists()
    with pytest.raises(FileNotFoundError, match="index not found"):
        I.open_index(tmp_path / "x.sqlite")


def test_scale_500_videos_2500_clips(tmp_path):
    w = tmp_path / "work"
    vids = [f"vid{i:03d}" for i in range(500)]
    layout = vbatch.Layout(vids, 10)
    for v in vids:
        raw, shots_d, clips_d = (layout.dir(w, st, v) for st in ("raw", "shots", "clips"))
        write_json(raw / "info.json", {"id": v, "status": "ok", "reason": None, "category": "watch",
                                                  "probe": {"width": 1280, "height": 720, "fps": 30.0, "n_frames": 900}})
        write_jsonl(raw / "rejects.jsonl", [])
        write_json(shots_d / "shots.json", {"video": v, "status": "ok", "shots": [
            {"index": s, "start_frame": s * 180, "end_frame": s * 180 + 180} for s in range(5)]})
        write_json(clips_d / "clips.json", {"video": v, "status": "ok", "clips": [
            {"id": f"{v}_s{s:02d}c0", "video": v, "shot": s, "path": f"{v}_s{s:02d}c0.mp4", "n_frames": 96,
             "fps": 24.0, "width": 160, "height": 90, "crop": [0, 0, 1280, 720]} for s in range(5)]})
        write_jsonl(clips_d / "rejects.jsonl", [{"stage": "clips", "item": f"{v}_s05", "reason": "shot too short: 1s"}])
    t0 = time.perf_counter()
    counts = I.build_index(w, vids, [], w / "index.sqlite", per_job=10)
    elapsed = time.perf_counter() - t0
    assert counts["videos"] == 500 and counts["clips"] == 2500 and counts["shots"] == 2500
    assert counts["rejects_by_stage"] == {"clips": {"shot too short": 500}}
    assert elapsed < 10, elapsed
    conn = I.open_index(w / "index.sqlite")
    plan = " ".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN SELECT * FROM clips WHERE video = 'vid100'"))
    assert "clips_video" in plan
    assert len(I.clips(conn, "vid100")) == 5
    conn.close()
