"""review: a verdicts CSV that is not UTF-8 and a pair whose caption is not a string.

Uses the fixture work directory of test_review.py (two filter shards of six pairs).
"""
from __future__ import annotations

import json

import pytest
from test_review import PARAMS, _filters, work  # noqa: F401  (work: the module fixture)

from pvtt.filter import review


def test_cp1252_verdicts_give_a_clear_error(tmp_path):
    csv = tmp_path / "verdicts.csv"
    csv.write_bytes("pair_id,verdict,notes\nvid000_s00c0__prod01_v0,reject,logo caf\u00e9 \u2013 wrong\n"
                    .encode("cp1252"))
    with pytest.raises(review.VerdictsError) as e:
        review.read_verdicts(csv)
    msg = str(e.value)
    assert str(csv) in msg and "not UTF-8" in msg and "line 2" in msg and "0xe9" in msg
    assert isinstance(e.value, ValueError)       # what the stage's other verdict-file errors are


def test_cp1252_verdicts_through_run(work, tmp_path):  # noqa: F811
    csv = tmp_path / "verdicts.csv"
    csv.write_bytes("pair_id,verdict,notes\nx,reject,\u00e9\n".encode("cp1252"))
    with pytest.raises(review.VerdictsError, match="not UTF-8"):
        review.run(PARAMS, work, _filters(work), tmp_path / "out", verdicts=str(csv))
    assert not (tmp_path / "out").exists()


def test_utf8_with_and_without_bom(tmp_path):
    body = "pair_id,verdict,notes\r\np1,reject,\"caf\u00e9, \u2013 \u65e5\u672c\"\r\np2,accept,\r\n"
    for name, data in (("plain.csv", body.encode("utf-8")), ("bom.csv", body.encode("utf-8-sig"))):
        (tmp_path / name).write_bytes(data)
        v = review.read_verdicts(tmp_path / name)
        assert v["p1"]["verdict"] == "reject" and v["p1"]["notes"] == "caf\u00e9, \u2013 \u65e5\u672c"
        assert v["p2"] == {"verdict": "accept", "notes": "", "row": 3}


def test_numeric_and_null_captions_render(work, tmp_path, monkeypatch):  # noqa: F811
    d0 = review.run(PARAMS, work, _filters(work), tmp_path / "r0", verdicts=str(tmp_path / "none.csv"))
    assert d0["sampled"]
    real = review.read_json

    def numeric_captions(path, *a, **k):
        data = real(path, *a, **k)
        if isinstance(data, dict) and "pairs" in data and isinstance(data["pairs"], list):
            data = json.loads(json.dumps(data))
            for i, p in enumerate(data["pairs"]):
                p["caption"] = [42, 3.5, None][i % 3]
        return data

    monkeypatch.setattr(review, "read_json", numeric_captions)
    review.run(PARAMS, work, _filters(work), tmp_path / "r1", verdicts=str(tmp_path / "none.csv"))
    sheet = (tmp_path / "r1" / "sheet.html").read_text(encoding="utf-8")
    assert "<td>42</td>" in sheet or "<td>3.5</td>" in sheet
