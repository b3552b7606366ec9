"""Ingest/products hardening: one URL shared by concurrent jobs, per-item manifest problems that
become rejects (never a crash), ids the Snakefile's wildcards cannot match."""
from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_ingest import PARAMS, FileServer, make_video, url_params

from genbuild.io.jsonio import read_json, read_jsonl
from pvtt import pipeline
from pvtt.data import ingest, products

N_JOBS = 8


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("hardening") / "good.mp4")


@pytest.fixture(scope="module")
def http(clip):
    srv = FileServer()
    srv.files["/v/shared.mp4"] = clip.read_bytes()
    yield srv
    srv.close()


def _ingest_job(barrier, manifest: str, vid: str, out: str, params: dict) -> None:
    """One Snakemake-like ingest job in its own process, started together with the others."""
    barrier.wait(30)
    ingest.run(manifest, vid, out, params)


# ----------------------------------------------------------------------------- 1. one URL, many jobs

def test_concurrent_ingests_of_one_url_all_succeed(http, tmp_path):
    url = http.url("/v/shared.mp4")
    data = http.files["/v/shared.mp4"]
    d = tmp_path / "data"
    d.mkdir()
    manifest = d / "manifest.json"
    manifest.write_text(json.dumps({"videos": [{"id": f"v{i}", "path": url} for i in range(N_JOBS)]}))
    params = url_params(tmp_path)
    ctx = multiprocessing.get_context("fork")          # separate processes, as Snakemake runs the jobs
    for rnd in range(3):
        http.reset()
        barrier = ctx.Barrier(N_JOBS)
        outs = [tmp_path / f"round{rnd}" / f"v{i}" for i in range(N_JOBS)]
        procs = [ctx.Process(target=_ingest_job, args=(barrier, str(manifest), f"v{i}", str(outs[i]), params))
                 for i in range(N_JOBS)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0] * N_JOBS, f"round {rnd}: a job crashed"
        infos = [read_json(o / "info.json") for o in outs]
        assert [(i["status"], i["reason"]) for i in infos] == [("ok", None)] * N_JOBS, f"round {rnd}"
        assert all((o / "video.mp4").read_bytes() == data for o in outs)
        assert all(sorted(p.name for p in o.iterdir()) == ["info.json", "rejects.jsonl", "video.mp4"] for o in outs)
        # the last job done removed the shared download (ingest.keep_downloads is false)
        assert all(p.suffix == ".lock" for p in (tmp_path / "dl").iterdir()), sorted((tmp_path / "dl").iterdir())
        assert 1 <= len(http.log) <= N_JOBS and all(r["status"] == 200 for r in http.log)


def test_keep_downloads_keeps_the_shared_file_for_concurrent_jobs(http, tmp_path):
    url = http.url("/v/shared.mp4")
    d = tmp_path / "data"
    d.mkdir()
    manifest = d / "manifest.json"
    manifest.write_text(json.dumps({"videos": [{"id": f"v{i}", "path": url} for i in range(4)]}))
    params = url_params(tmp_path, keep_downloads=True)
    http.reset()
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_ingest_job, args=(barrier, str(manifest), f"v{i}", str(tmp_path / f"v{i}"), params))
             for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [read_json(tmp_path / f"v{i}" / "info.json")["status"] for i in range(4)] == ["ok"] * 4
    kept = [p for p in (tmp_path / "dl").iterdir() if p.suffix != ".lock"]
    assert [p.read_bytes() for p in kept] == [http.files["/v/shared.mp4"]]
    assert len(http.log) == 1                                    # downloaded once, then reused


# ----------------------------------------------------------------------------- 2a. free-text fields

def _png(path: Path) -> Path:
    img = np.full((40, 60, 3), 255, np.uint8)
    img[10:30, 20:40] = (200, 30, 30)
    Image.fromarray(img).save(path)
    return path


def test_yaml_date_caption_becomes_text(clip, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "good.mp4").write_bytes(clip.read_bytes())
    _png(d / "front.png")
    m = d / "manifest.yaml"
    m.write_text("videos:\n"
                 "  - {id: v1, path: good.mp4, caption: 2024-05-01, category: 7, product_id: 12}\n"
                 "  - {id: v2, path: good.mp4, caption: [a, b]}\n"
                 "products:\n"
                 "  - {id: p1, caption: 2024-05-01, name: 3.5, views: [{view: front, path: front.png}]}\n"
                 "  - {id: p2, caption: {a: 1}, views: [{view: front, path: front.png}]}\n")
    info = ingest.run(m, "v1", tmp_path / "v1", PARAMS)
    assert info["status"] == "ok", info["reason"]
    assert (info["caption"], info["category"], info["product_id"]) == ("2024-05-01", "7", "12")
    assert read_json(tmp_path / "v1" / "info.json")["caption"] == "2024-05-01"
    # a list is no text: a reject naming the entry and the key, the job still ends normally
    info = ingest.run(m, "v2", tmp_path / "v2", PARAMS)
    assert info["status"] == "rejected" and info["reason"].startswith("bad field")
    assert "'v2'" in info["reason"] and "'caption'" in info["reason"]
    assert read_jsonl(tmp_path / "v2" / "rejects.jsonl")[0]["reason"] == info["reason"]
    assert not (tmp_path / "v2" / "video.mp4").exists()
    # products: the same
    res = products.run(m, "p1", tmp_path / "p1", {"products": {"backend": "white_matting"}})
    assert res["status"] == "ok" and (res["caption"], res["name"]) == ("2024-05-01", "3.5")
    assert read_json(tmp_path / "p1" / "product.json")["caption"] == "2024-05-01"
    res = products.run(m, "p2", tmp_path / "p2", {"products": {"backend": "white_matting"}})
    assert res["status"] == "rejected" and "'p2'" in res["reason"] and "'caption'" in res["reason"]
    assert [r["item"] for r in read_jsonl(tmp_path / "p2" / "rejects.jsonl")] == ["p2"]


# ----------------------------------------------------------------------------- 2b/2c. list_inputs

def _config(manifest: Path, tmp_path: Path) -> dict:
    return {"paths": {"work": str(tmp_path / "work")}, "data": {"source": "manifest", "manifest": str(manifest)}}


def test_view_without_path_does_not_break_parsing_and_is_rejected(clip, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "good.mp4").write_bytes(clip.read_bytes())
    _png(d / "front.png")
    m = d / "manifest.json"
    m.write_text(json.dumps({"videos": [{"id": "v1", "path": "good.mp4"}],
                             "products": [{"id": "p1", "views": [{"view": "front", "path": "front.png"},
                                                                 {"view": "side"}]},
                                          {"id": "p2", "views": [{"view": "top"}]}]}))
    inputs = pipeline.list_inputs(_config(m, tmp_path))
    assert inputs.products == {"p1": str(m), "p2": str(m)}
    assert inputs.product_files == {"p1": [str(d / "front.png")], "p2": []}
    assert inputs.video_files == {"v1": str(d / "good.mp4")}
    res = products.run(m, "p1", tmp_path / "p1", {"products": {"backend": "white_matting"}})
    assert [v["view"] for v in res["views"]] == ["front"]
    rows = read_jsonl(tmp_path / "p1" / "rejects.jsonl")
    assert [r["item"] for r in rows] == ["p1/side"]
    assert rows[0]["reason"].startswith("missing key") and "'p1'" in rows[0]["reason"] and "'path'" in rows[0]["reason"]
    res = products.run(m, "p2", tmp_path / "p2", {"products": {"backend": "white_matting"}})
    assert res["status"] == "rejected" and "missing key" in res["reason"]


@pytest.mark.parametrize("kind,bad_id", [("videos", "v.1"), ("videos", "v 1"), ("products", "p.1"),
                                         ("products", "p/1")])
def test_id_outside_the_wildcard_pattern_is_a_clear_startup_error(tmp_path, kind, bad_id):
    m = tmp_path / "manifest.yaml"
    doc = {"videos": [{"id": "ok_1", "path": "a.mp4"}], "products": [{"id": "ok-2", "views": []}]}
    doc[kind].append({"id": bad_id, "path": "b.mp4"} if kind == "videos" else {"id": bad_id, "views": []})
    m.write_text(json.dumps(doc))
    for call in (lambda: pipeline.read_manifest(m), lambda: pipeline.list_inputs(_config(m, tmp_path))):
        with pytest.raises(ValueError) as e:
            call()
        msg = str(e.value)
        assert str(m) in msg and f"{kind}[1]" in msg and repr(bad_id) in msg and pipeline.ID_PATTERN in msg, msg


def test_shared_nested_caption_is_a_reject_with_a_short_message():
    """A YAML alias bomb as a caption: 2**60 shared leaves. A full repr() would never finish."""
    bomb: list = [1, 2]
    for _ in range(60):
        bomb = [bomb, bomb]
    texts, bad = ingest.text_fields({"caption": bomb}, ("caption",), "video 'v1'")
    assert texts == {"caption": None} and len(bad) == 1 and len(bad[0]) < 200
    assert bad[0].startswith("bad field: video 'v1' key 'caption' must be text, got a list")


@pytest.mark.parametrize("module,key", [(ingest, "timeout_seconds"), (products, "min_component_frac")])
def test_huge_integer_params_are_params_errors_not_overflow(module, key):
    stage = module.__name__.rsplit(".", 1)[1]
    try:
        module.validate_params({stage: {key: 10**400}})
    except ValueError as e:
        assert f"{stage}.{key}" in str(e)
