"""Items grouped per job: a batch directory built item by item, an item's failure its reject."""
from __future__ import annotations

from genbuild import batching
from genbuild.io.jsonio import read_json, write_json


def test_build_batch_turns_an_item_failure_into_its_reject(tmp_path):
    def build(item, d):
        if item == "bad":
            (d / "partial").mkdir(parents=True)          # a half-written item directory is removed
            raise RuntimeError("decoder crashed")
        write_json(d / "out.json", {"item": item})

    failed = []
    status = batching.build_batch(tmp_path / "b0000", ["a", "bad", "c"], build,
                                  lambda item, d, reason: failed.append((item, reason, sorted(d.iterdir()))))
    assert status == {"a": "ok", "bad": "RuntimeError: decoder crashed", "c": "ok"}
    assert failed == [("bad", "RuntimeError: decoder crashed", [])]
    assert read_json(tmp_path / "b0000" / "c" / "out.json") == {"item": "c"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
