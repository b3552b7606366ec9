"""Fuzzed manifest loader (issue 12): random structures, encodings and one-field mutations of a valid
manifest give either a manifest whose fields later stages can use, or a ManifestError that names the
file and the entry (index or id) or key; never another exception.

Examples: ``PVTT_FUZZ_EXAMPLES`` (default 150 per test), derandomized so CI runs are reproducible.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pvtt.data import ingest

FUZZ = settings(max_examples=int(os.environ.get("PVTT_FUZZ_EXAMPLES", "150")), deadline=None, derandomize=True,
                database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ODD_STRINGS = ["", " ", "~", "null", "yes", "off", "0x1F", "1e3", ".nan", "2024-05-01", "12:30:00", "../x.mp4",
               "/etc/passwd", "ftp://h/x.mp4", "http://", "https://[::1/x", "file:///x", "./a:b.mp4", "a\0b",
               "\ud800", "\u2028", "caf\u00e9", "\u65e5\u672c", "\t", "\r\n", "#", "&a", "*a", "!!python/name:os.system",
               "{", "[", "'", '"', "%YAML", "- ", ": ", "---", "...", "\ufeff", "x" * 300, "v1", "p1", "a" * 64]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-2**80, max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.sampled_from(ODD_STRINGS),
    st.dates(), st.datetimes(),
)
KEYS = st.one_of(st.sampled_from(["id", "path", "sha256", "views", "view", "caption", "category", "product_id",
                                  "name", "videos", "products"]),
                 st.text(max_size=8), st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
                      max_leaves=10)
IDS = st.one_of(st.sampled_from(["v1", "p1", "a.b-c_d", "-x", "a b", "..", "caf\u00e9", "", "v1/x"]), SCALARS)
PATHS = st.one_of(st.sampled_from(["v.mp4", "sub/v.mp4", "../v.mp4", "/abs/v.mp4", "https://h/v.mp4",
                                   "ftp://h/v.mp4", "./n:x.mp4", "a\0b.mp4", ""]), VALUES)
VIEW = st.fixed_dictionaries({}, optional={"view": IDS, "path": PATHS, "caption": VALUES})
VIDEO = st.fixed_dictionaries({}, optional={"id": IDS, "path": PATHS, "caption": VALUES, "category": VALUES,
                                            "product_id": VALUES, "sha256": st.one_of(st.just("ab" * 32), VALUES)})
PRODUCT = st.fixed_dictionaries({}, optional={"id": IDS, "name": VALUES, "caption": VALUES,
                                              "views": st.one_of(st.lists(VIEW, max_size=3), VALUES)})
MANIFESTS = st.fixed_dictionaries({}, optional={"videos": st.one_of(st.lists(VIDEO, max_size=4), VALUES),
                                                "products": st.one_of(st.lists(PRODUCT, max_size=3), VALUES),
                                                "extra": VALUES})
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "cp1252", "latin-1"]
YAMLISH = st.text(alphabet="{}[]:,-'\"!&*#%@`|>?~ \n\tab01.\u00e9\\x", max_size=60)
TAGS = ["!!timestamp", "!!bool", "!!int", "!!float", "!!binary", "!!set", "!!omap", "!!pairs", "!!str", "!!map",
        "!!seq", "!!null", "!!merge", "!!python/object:os.system", "!foo"]
# an explicitly tagged value in a manifest: PyYAML's constructors raised KeyError, IndexError, AttributeError
TAGGED = st.builds("videos: [{{id: a, path: a.mp4, caption: {} {}}}]\n".format, st.sampled_from(TAGS),
                   st.one_of(st.sampled_from(["x", "''", "0x", "[1]", "{a: 1}", "2024-01-01 00:00:00 +99:99"]),
                             YAMLISH.filter(lambda t: "\n" not in t)))


def dump(doc, fmt: str, unicode: bool) -> str:
    """``doc`` as manifest text: block or flow YAML, or JSON (whose keys and dates become strings)."""
    if fmt == "json":
        return json.dumps(doc, default=str, ensure_ascii=not unicode)
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=unicode, default_flow_style=fmt == "flow")


def encode(text: str, encoding: str) -> bytes:
    """``text`` in ``encoding``; a lone surrogate becomes invalid UTF-8, unmappable characters ``?``."""
    return text.encode(encoding, errors="surrogatepass" if encoding.startswith("utf-8") else "replace")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """One directory for every example (the manifest file is overwritten each time)."""
    return tmp_path_factory.mktemp("fuzz_manifest")


def load_or_error(path: Path, strict: bool) -> dict | str:
    """The loaded manifest, or the ManifestError's message (which must name the file)."""
    try:
        manifest = ingest.load_manifest(path, strict=strict)
    except ingest.ManifestError as e:
        msg = str(e)
        assert msg.startswith(f"{path}: "), msg
        return msg
    assert_usable(manifest, path)
    return manifest


def assert_usable(m: dict, path: Path) -> None:
    """What the ingest and products stages take for granted of a loaded manifest holds."""
    assert isinstance(m, dict)
    for kind in ("videos", "products"):
        assert m.get(kind) is None or isinstance(m[kind], list), kind
        ids = [str(e["id"]) for e in m.get(kind) or []]
        assert all(ingest._ID_RE.match(i) for i in ids) and len(set(ids)) == len(ids), ids
    for v in m.get("videos") or []:
        assert isinstance(v["path"], str) and v["path"] and "\0" not in v["path"]
        assert v.get("sha256") is None or re.fullmatch(r"[0-9a-fA-F]{64}", v["sha256"])
        assert ingest.find_video(m, str(v["id"]), path) is v
        assert_text_fields(v, ingest.TEXT_FIELDS)
        assert_source_checks(v["path"], path)
    for p in m.get("products") or []:
        assert p.get("views") is None or isinstance(p["views"], list)
        assert ingest.find_product(m, str(p["id"]), path) is p
        assert_text_fields(p, ("category", "name", "caption"))
        for view in p.get("views") or []:
            assert isinstance(view, dict)
            assert view.get("path") in (None, "") or (isinstance(view["path"], str) and "\0" not in view["path"])
            str(view.get("view"))                      # the products stage names the view by it
            if view.get("path"):
                assert_source_checks(view["path"], path)
    assert isinstance(ingest.source_problems(m, path), list)


def assert_text_fields(entry: dict, keys: tuple[str, ...]) -> None:
    """Free text is a str or None (else a ``bad field`` reject naming the key) and can be written as UTF-8 JSON."""
    texts, bad = ingest.text_fields(entry, keys, "item")
    assert all(t is None or isinstance(t, str) for t in texts.values()), texts
    assert all(b.startswith("bad field: item key ") for b in bad), bad
    json.dumps(texts, ensure_ascii=False).encode("utf-8")
    json.dumps(bad, ensure_ascii=False).encode("utf-8")


def assert_source_checks(value: str, manifest: Path) -> None:
    """The per-item source check of a later stage refuses with a SourceError or accepts; nothing else."""
    try:
        ingest.check_source(value, manifest)
    except ingest.SourceError:
        pass


def check_both(path: Path) -> None:
    plain = load_or_error(path, strict=False)
    strict = load_or_error(path, strict=True)
    if isinstance(plain, str):                         # what fails plainly fails strictly, with the same message
        assert strict == plain


# ----------------------------------------------------------------------------- random documents


@FUZZ
@given(doc=st.one_of(MANIFESTS, VALUES), fmt=st.sampled_from(["block", "flow", "json"]), unicode=st.booleans(),
       encoding=st.sampled_from(ENCODINGS))
def test_random_structures_and_encodings(folder, doc, fmt, unicode, encoding):
    path = folder / "m.yaml"
    path.write_bytes(encode(dump(doc, fmt, unicode), encoding))
    check_both(path)


@FUZZ
@given(doc=MANIFESTS, fmt=st.sampled_from(["block", "flow", "json"]), at=st.floats(0, 1),
       junk=st.binary(min_size=1, max_size=4))
def test_corrupted_bytes(folder, doc, fmt, at, junk):
    """A valid-looking manifest with a few random bytes spliced in (invalid UTF-8, control bytes, NUL)."""
    data = encode(dump(doc, fmt, True), "utf-8")
    cut = int(at * len(data))
    path = folder / "m.yaml"
    path.write_bytes(data[:cut] + junk + data[cut:])
    check_both(path)


@FUZZ
@given(data=st.one_of(st.binary(max_size=120), YAMLISH.map(lambda t: t.encode("utf-8")),
                     TAGGED.map(lambda t: t.encode("utf-8"))))
@example(data=b"\xff\xfev\x00i\x00d\x00")                               # UTF-16 with a BOM
@example(data="videos: [{id: a, path: caf\u00e9.mp4}]".encode("cp1252"))
@example(data=b"videos: " + b"[" * 3000 + b"]" * 3000)                  # nesting past the recursion limit
@example(data=b"a: &a [*a]\nvideos: *a\n")                              # a cyclic alias
@example(data=b"videos: [{id: a, path: a.mp4, caption: !!timestamp '\t2000-01-01 00:00:00'}]")
def test_random_bytes_and_yaml_like_text(folder, data):
    path = folder / "m.yaml"
    path.write_bytes(data)
    check_both(path)


# ----------------------------------------------------------------------------- one mutated field

BASE = {
    "videos": [{"id": f"v{i}", "path": f"v{i}.mp4", "caption": f"clip {i}", "category": "watch",
                "product_id": "p0", "sha256": f"{i:02d}" * 32} for i in range(3)],
    "products": [{"id": f"p{i}", "name": f"P{i}", "category": "watch", "caption": "a watch",
                  "views": [{"view": f"w{j}", "path": f"p{i}_{j}.png"} for j in range(2)]} for i in range(2)],
}
MUTATIONS = st.sampled_from(["set", "delete", "replace_entry", "add_key", "set_view", "delete_view_key",
                             "replace_view"])


def mutate(manifest: dict, op: str, kind: str, i: int, key, value) -> dict:
    """A deep copy of ``manifest`` with one field of entry ``kind[i]`` (or of a product's first view) changed."""
    m = json.loads(json.dumps(manifest))
    entry = m[kind][i]
    on_view = "view" in op and kind == "products"      # a video has no views: the op applies to the entry
    target = entry["views"][0] if on_view else entry
    if op in ("replace_entry", "replace_view") and not on_view:
        m[kind][i] = value
    elif op == "replace_view":
        entry["views"][0] = value
    elif op in ("delete", "delete_view_key"):
        target.pop(key, None)
    elif op == "add_key":
        target[f"unknown_{key}"] = value
    else:
        target[key] = value
    return m


def names_entry(msg: str, m: dict, kind: str, i: int) -> bool:
    """The message names ``kind[i]`` by its index, or by its (mutated) id (a duplicate id names the id)."""
    if f"{kind}[{i}]" in msg:
        return True
    entry = m[kind][i]
    iid = entry.get("id") if isinstance(entry, dict) else None
    return isinstance(iid, (str, int, float)) and not isinstance(iid, bool) and repr(str(iid)) in msg


@FUZZ
@given(op=MUTATIONS, kind=st.sampled_from(["videos", "products"]), i=st.integers(0, 1),
       key=st.sampled_from(["id", "path", "sha256", "caption", "category", "product_id", "name", "views", "view"]),
       value=st.one_of(VALUES, IDS, PATHS), fmt=st.sampled_from(["block", "flow", "json"]))
@example(op="set", kind="videos", i=1, key="id", value="v0", fmt="block")            # a duplicate id
@example(op="set", kind="videos", i=0, key="path", value="a\0b.mp4", fmt="json")     # NUL: os calls raise
@example(op="set", kind="videos", i=0, key="path", value="\ud800", fmt="json")       # a lone surrogate
@example(op="set", kind="products", i=1, key="views", value={}, fmt="block")         # views not a list
@example(op="set", kind="videos", i=1, key="caption", value=[[1, 2], {"a": None}], fmt="flow")
def test_one_mutated_field(folder, op, kind, i, key, value, fmt):
    m = mutate(BASE, op, kind, i, key, value)
    path = folder / "m.yaml"
    try:  # non-ASCII escaped: the file is valid UTF-8, only the mutated field is wrong
        path.write_text(dump(m, fmt, False), encoding="ascii")
    except (TypeError, ValueError):                   # not serialisable this way (a date key for JSON)
        return
    for strict in (False, True):
        res = load_or_error(path, strict)
        if isinstance(res, str):
            assert names_entry(res, m, kind, i), (res, op, kind, i)


# ----------------------------------------------------------------------------- pinned findings

@pytest.mark.parametrize("text,fragment", [
    # PyYAML's constructors raised bare ValueError, AttributeError, KeyError, IndexError (no position)
    ("videos:\n- id: a\n  path: a.mp4\n  caption: 2024-13-45\n", "line 4"),
    ("videos:\n- id: " + "9" * 5000 + "\n  path: a.mp4\n", "line 2"),
    ("videos:\n- {id: a, path: a.mp4, caption: !!timestamp x}\n", "cannot read 'x' as timestamp"),  # AttributeError
    ("videos:\n- {id: a, path: a.mp4, caption: !!bool x}\n", "cannot read 'x' as bool"),  # KeyError
    ("videos:\n- {id: a, path: a.mp4, caption: !!int ''}\n", "cannot read '' as int"),  # IndexError
    ("videos:\n- {id: a, path: a.mp4, caption: 2024-01-01 00:00:00 +99:99}\n", "line 2, column 33"),
    # ... and the scanner OverflowError / ValueError for an escape past U+10FFFF
    ('videos:\n- {id: a, path: a.mp4, caption: "\\Ua0001000"}\n', "line 2, column 36"),
    ('videos:\n- {id: a, path: a.mp4, caption: "\\U7fffffff"}\n', "chr() arg not in range"),
    # ... and the composer a RecursionError
    ("videos: " + "[" * 3000 + "]" * 3000, "nested too deeply"),
    # a hex literal is read without the 4300-digit limit: str() of it raised ValueError
    ("videos:\n- id: 0x" + "f" * 5000 + "\n  path: a.mp4\n", "videos[0].id: an integer"),
    ("videos:\n- id: a\n  path: a.mp4\n  caption: [0x" + "f" * 5000 + "]\n", "videos[0].caption[0]: an integer"),
    # a NUL or a lone surrogate in a path: os calls raised ValueError / UnicodeEncodeError (strict, ingest)
    ('videos:\n- id: a\n  path: "a\\0b.mp4"\n', "videos[0] (id 'a') 'path' must be a string without NUL"),
    ('products:\n- id: p\n  views: [{view: f, path: "a\\0b.png"}]\n', "products[0] (id 'p') views[0] 'path'"),
    ('videos:\n- id: a\n  path: "\\ud800.mp4"\n', "videos[0].path: text '\\ud800.mp4' holds a lone surrogate"),
    # a mapping (or any non-list) was taken as "no videos" / "no views"
    ("videos: {}\n", "'videos' must be a list, got a dict"),
    ("videos: []\nproducts: 0\n", "'products' must be a list, got a int"),
    ("products:\n- id: p\n  views: {a: 1}\n", "products[0] (id 'p') 'views' must be a list"),
])
@pytest.mark.parametrize("strict", [False, True])
def test_pinned_findings_are_manifest_errors(tmp_path, text, fragment, strict):
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ingest.ManifestError) as e:
        ingest.load_manifest(path, strict=strict)
    assert str(e.value).startswith(f"{path}: ") and fragment in str(e.value), str(e.value)


def test_null_lists_and_a_utf8_bom_still_load(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_bytes("\ufeffvideos:\n- {id: a, path: a.mp4, caption: 2024-05-01}\nproducts:\n- {id: p, views: null}\n"
                     .encode("utf-8"))
    m = ingest.load_manifest(path, strict=True)
    assert m["videos"][0]["caption"] == datetime.date(2024, 5, 1) and m["products"][0]["views"] is None
    assert ingest.text_fields(m["videos"][0], ingest.TEXT_FIELDS, "v")[0]["caption"] == "2024-05-01"
    path.write_text("videos: null\n", encoding="utf-8")
    assert ingest.load_manifest(path) == {"videos": None}


def test_unreadable_manifest_is_a_manifest_error(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("videos: []\n", encoding="utf-8")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):                   # root reads anything
            pytest.skip("running as root")
        with pytest.raises(ingest.ManifestError, match="cannot read the manifest"):
            ingest.load_manifest(path)
    finally:
        path.chmod(0o644)


def test_helpers_write_what_they_say(tmp_path):
    """The fuzz inputs reach the loader as intended (a guard against a strategy that tests nothing)."""
    assert encode("\ud800", "utf-8") == b"\xed\xa0\x80" and encode("\u65e5", "cp1252") == b"?"
    m = mutate(BASE, "set_view", "products", 1, "path", 5)
    assert m["products"][1]["views"][0]["path"] == 5 and BASE["products"][1]["views"][0]["path"] == "p1_0.png"
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "m.yaml"
    path.write_text(dump(BASE, "flow", True), encoding="utf-8")
    assert ingest.load_manifest(path, strict=True) == BASE
