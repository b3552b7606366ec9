"""Items grouped per job: batches in order, line counts, a batch directory built item by item."""
from __future__ import annotations

import pytest

from genbuild import batching
from genbuild.io.jsonio import read_json, write_json


def test_batches_cover_the_items_in_order_and_ids_sort():
    items = [f"v{i}" for i in range(10)]
    groups = batching.group(items, 4)
    assert list(groups) == ["b0000", "b0001", "b0002"] and sorted(groups) == list(groups)
    assert [x for g in groups.values() for x in g] == items and groups["b0002"] == ["v8", "v9"]
    assert batching.batch_ids(0, 4) == [] and batching.num_batches(19_500_000, 20_000) == 975
    assert batching.batch_id(12345) == "b12345" and batching.batch_index("b12345") == 12345
    with pytest.raises(ValueError, match=">= 1"):
        batching.num_batches(3, 0)
    with pytest.raises(ValueError, match="not a batch id"):
        batching.batch_index("x1")


def test_count_lines_reads_in_chunks(tmp_path):
    p = tmp_path / "m.csv"
    p.write_bytes(b"id\n" + b"".join(b"c%d\n" % i for i in range(1000)))
    assert batching.count_lines(p, chunk=7) == 1001
    p.write_bytes(b"a\nb")  # a last line without a newline counts
    assert batching.count_lines(p) == 2
    p.write_bytes(b"")
    assert batching.count_lines(p) == 0


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
