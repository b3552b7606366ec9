"""Fuzzed verdicts reader (issue 12): random CSV content (columns, header, duplicate ids, empty rows,
quotes, NUL bytes, long fields, BOM) in random encodings gives either the verdicts table or a
VerdictsError naming the file and the row, pair id or problem; never another exception.

Examples: ``PVTT_FUZZ_EXAMPLES`` (default 150 per test), derandomized so CI runs are reproducible.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pvtt.filter import review

FUZZ = settings(max_examples=int(os.environ.get("PVTT_FUZZ_EXAMPLES", "150")), deadline=None, derandomize=True,
                database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

LONG = "y" * (csv.field_size_limit() + 10)          # over the csv module's field limit
COLUMNS = st.one_of(st.sampled_from(["pair_id", "verdict", "notes", " pair_id ", "Verdict", "", "extra"]),
                    st.text(max_size=8))
IDS = st.one_of(st.sampled_from(["p1", "p2", " p1 ", "", "vid000_s00c0__prod01_v0", "caf\u00e9", "a,b", 'q"q']),
                st.text(max_size=10))
VERDICT_VALUES = st.one_of(st.sampled_from(["accept", "reject", "", " ACCEPT ", "Reject", "maybe", "\u0130", "acc\0ept"]),
                           st.text(max_size=8))
NOTES = st.one_of(st.sampled_from(["", "logo wrong, blurry", 'said "no"', "line\nbreak", "\r", "nul\0byte",
                                   "caf\u00e9 \u2013 \u65e5\u672c", "\ufeff"]),
                  st.text(max_size=20), st.just(LONG))
FIELD = st.one_of(IDS, VERDICT_VALUES, NOTES)
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "cp1252", "latin-1"]
TERMINATORS = ["\n", "\r\n", "\r"]


def write_csv(header: list[str] | None, rows: list[list[str]], quoting: int, terminator: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, quoting=quoting, lineterminator=terminator)
    if header is not None:
        w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """One directory for every example (the CSV is overwritten each time)."""
    return tmp_path_factory.mktemp("fuzz_verdicts")


def read_or_error(path: Path) -> dict | str:
    """The verdicts table (its shape checked), or the VerdictsError message (which names the file)."""
    try:
        table = review.read_verdicts(path)
    except review.VerdictsError as e:
        msg = str(e)
        assert msg.startswith(f"{path}: ") and isinstance(e, ValueError), msg
        assert len(msg) < 1000, msg[:300]                  # a huge field is not pasted into the message
        return msg
    assert isinstance(table, dict)
    for pid, rec in table.items():
        assert isinstance(pid, str) and pid and pid == pid.strip(), pid
        assert set(rec) == {"verdict", "notes", "row"} and rec["verdict"] in ("", "accept", "reject"), rec
        assert isinstance(rec["notes"], str) and isinstance(rec["row"], int) and rec["row"] >= 2
    json.dumps(table, ensure_ascii=False).encode("utf-8")  # decisions.json and rejects.jsonl can hold it
    return table


@FUZZ
@given(header=st.one_of(st.none(), st.lists(COLUMNS, max_size=5)), rows=st.lists(st.lists(FIELD, max_size=5), max_size=6),
       quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]), terminator=st.sampled_from(TERMINATORS),
       encoding=st.sampled_from(ENCODINGS), bom=st.booleans())
@example(header=["pair_id", "verdict", "notes"], rows=[["p1", "accept", LONG]], quoting=csv.QUOTE_MINIMAL,
         terminator="\n", encoding="utf-8", bom=False)                         # csv.Error leaked
@example(header=["pair_id", "verdict"], rows=[["p1", "accept", "x", "y"], ["p1", "reject"]],
         quoting=csv.QUOTE_MINIMAL, terminator="\n", encoding="utf-8", bom=False)
def test_random_csv_in_random_encodings(folder, header, rows, quoting, terminator, encoding, bom):
    text = write_csv(header, rows, quoting, terminator)
    path = folder / "verdicts.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode(encoding, errors="replace"))
    read_or_error(path)


@FUZZ
@given(data=st.one_of(st.binary(max_size=200),
                      st.text(alphabet='pair_idvercntosjk,"\n\r\0 \t\ufeff\u00e9', max_size=80).map(str.encode)))
@example(data=b'pair_id,verdict\np1,"accept\np2,reject\n' + b"x" * (csv.field_size_limit() + 10))  # unclosed quote
@example(data=b"\xff\xfep\x00a\x00i\x00r\x00")                               # UTF-16 with a BOM
@example(data="pair_id,verdict\np1,d\u00e9j\u00e0\n".encode("cp1252"))
def test_random_bytes(folder, data):
    path = folder / "verdicts.csv"
    path.write_bytes(data)
    read_or_error(path)


VALID_ROWS = st.lists(st.tuples(st.sampled_from(["p1", "p2", "p3", " p2 ", ""]),
                                st.sampled_from(["accept", "reject", "", " ACCEPT ", "maybe"]), NOTES), max_size=8)


@FUZZ
@given(rows=VALID_ROWS, order=st.permutations(["pair_id", "verdict", "notes"]), terminator=st.sampled_from(TERMINATORS))
def test_table_matches_the_rows(folder, rows, order, terminator):
    """Well-formed files: the table holds each pair's (last non-empty) verdict, or the error names the row."""
    # csv.writer quotes a field only for the characters of its own line terminator: with "\r" alone a
    # note holding "\n" would really be two rows, so other terminators quote every field
    quoting = csv.QUOTE_MINIMAL if terminator == "\r\n" else csv.QUOTE_ALL
    text = write_csv(order, [[dict(zip(("pair_id", "verdict", "notes"), r))[c] for c in order] for r in rows],
                     quoting, terminator)
    path = folder / "verdicts.csv"
    path.write_bytes(text.encode("utf-8"))
    res = read_or_error(path)
    seen: dict[str, str] = {}
    for i, (pid, verdict, notes) in enumerate(rows, start=2):
        pid, verdict = pid.strip(), verdict.strip().lower()
        if len(notes) > csv.field_size_limit():
            assert isinstance(res, str) and "field larger than field limit" in res, (res, rows)
            return
        if not pid and not verdict:
            continue
        if not pid or verdict not in ("", "accept", "reject") or (verdict and seen.get(pid, verdict) != verdict):
            assert isinstance(res, str) and f"row {i}" in res, (res, rows)
            return
        if verdict:
            seen[pid] = verdict
    assert isinstance(res, dict), res
    assert {p: r["verdict"] for p, r in res.items() if r["verdict"]} == seen


# ----------------------------------------------------------------------------- pinned findings

@pytest.mark.parametrize("text,fragment", [
    # bare ValueError before: now the stage's own VerdictsError (still a ValueError)
    ("pair,verdict\nx,accept\n", "header must have pair_id and verdict columns"),
    ("pair_id,verdict\n,accept\n", "row 2: empty pair_id"),
    ("pair_id,verdict\nx,maybe\n", "row 2 (pair_id x): unknown verdict 'maybe'"),
    ("pair_id,verdict\nx,accept\nx,reject\n", "row 3 (pair_id x): verdict 'reject' contradicts row 2"),
    # _csv.Error leaked for a field over the csv module's limit (here from an unclosed quote)
    ('pair_id,verdict\np1,"accept\np2,reject\n' + LONG + "\n", "line 4: field larger than field limit"),
    ("pair_id,verdict,notes\np1,reject," + LONG + "\n", "line 2: field larger than field limit"),
    # a pasted paragraph is cut in the message
    ("pair_id,verdict\np1," + "z" * 5000 + "\n", "unknown verdict 'zzz"),
])
def test_pinned_findings_are_verdicts_errors(tmp_path, text, fragment):
    path = tmp_path / "verdicts.csv"
    path.write_text(text, encoding="utf-8", newline="")
    with pytest.raises(review.VerdictsError) as e:
        review.read_verdicts(path)
    assert str(e.value).startswith(f"{path}: ") and fragment in str(e.value) and len(str(e.value)) < 1000, \
        str(e.value)[:300]


def test_unreadable_path_is_a_verdicts_error(tmp_path):
    with pytest.raises(review.VerdictsError, match="cannot read the verdicts CSV"):
        review.read_verdicts(tmp_path)                  # a directory where the CSV should be


def test_extra_fields_nul_bytes_and_a_bom_are_read(tmp_path):
    path = tmp_path / "verdicts.csv"
    path.write_bytes("\ufeffpair_id,verdict,notes\r\np1,reject,a\0b,extra,fields\r\np2\r\n\r\n,,\r\n"
                     .encode("utf-8"))
    assert review.read_verdicts(path) == {"p1": {"verdict": "reject", "notes": "a\0b", "row": 2},
                                          "p2": {"verdict": "", "notes": "", "row": 3}}
