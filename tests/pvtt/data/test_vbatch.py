"""PVTT's per-video stages run per batch of videos (pvtt.data.vbatch): layout, rejects, fatal errors."""
from __future__ import annotations

import json

import pytest

from genbuild import batching
from genbuild.io.jsonio import read_json, read_jsonl, write_json
from genbuild.weights import MissingWeightsError
from pvtt.data import shots, vbatch


def test_batches_are_sorted_slices_of_fixed_width_ids():
    vids = [f"v{i}" for i in (3, 1, 2, 0, 4)]
    assert vbatch.batches(vids, 2) == {"b0000": ["v0", "v1"], "b0001": ["v2", "v3"], "b0002": ["v4"]}
    lay = vbatch.Layout(vids, 2)
    assert lay.rel("masks", "v3") == "masks/b0001/v3" and lay.batch["v4"] == "b0002"
    assert batching.num_batches(5000, 10) == 500 and batching.num_batches(0, 10) == 0
    for bad in ({}, {"data": {}}, {"data": {"videos_per_job": 0}}, {"data": {"videos_per_job": True}}):
        with pytest.raises(ValueError, match="data.videos_per_job"):
            vbatch.per_job(bad)


def test_build_batch_stops_on_a_fatal_error_and_leaves_no_output(tmp_path):
    def build(item, d):
        raise MissingWeightsError("models/x: weights not found")

    with pytest.raises(MissingWeightsError):
        vbatch.run_videos("masks", tmp_path / "b0000", ["v0"], build, "masks.json", lambda v, r: {})
    assert list(tmp_path.iterdir()) == []


def test_shots_batch_cli_rejects_a_broken_video_and_goes_on(tmp_path):
    """A video whose stage raises is a reject with a rejected status document; the batch's other
    videos are built and the job succeeds."""
    raw = tmp_path / "raw" / "b0000"
    write_json(raw / "v0" / "info.json", {"id": "v0", "status": "rejected", "reason": "unreadable video"})
    (raw / "v1").mkdir(parents=True)                      # no info.json: shots.run raises
    out = tmp_path / "shots" / "b0000"
    shots.main(["--params", json.dumps({"shots": {}}), "--raw", str(raw), "--videos", "v0", "v1", "--out", str(out)])
    assert read_json(out / "v0" / "shots.json")["status"] == "skipped"
    doc = read_json(out / "v1" / "shots.json")
    assert doc["status"] == "rejected" and doc["reason"].startswith("error: FileNotFoundError") and doc["shots"] == []
    (row,) = read_jsonl(out / "v1" / "rejects.jsonl")
    assert row["stage"] == "shots" and row["item"] == "v1" and row["reason"] == doc["reason"]
