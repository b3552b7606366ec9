"""Fuzzed params checks (issue 12): the real params.yaml with one key changed to a random value, deleted
or joined by an unknown key, and wholly random structures, give either a valid config or a ParamsError
naming the dotted key path; the per-stage checks (validate_params) raise their own ValueError naming
the key; never another exception.

Examples: ``PVTT_FUZZ_EXAMPLES`` (default 150 per test), derandomized so CI runs are reproducible.
"""
from __future__ import annotations

import copy
import datetime
import functools
import math
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from genbuild import params as P
from pvtt.data import ingest, maskqc, masks, pairs, products, shots

FUZZ = settings(max_examples=int(os.environ.get("PVTT_FUZZ_EXAMPLES", "150")), deadline=None, derandomize=True,
                database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ROOT = Path(__file__).resolve().parents[2]
BASE = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def key_paths(node, prefix=()) -> list[tuple]:
    """Every key path of ``node`` (dict keys and list indices), parents before children."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    out = []
    for k, v in items:
        out += [(*prefix, k), *key_paths(v, (*prefix, k))]
    return out


PATHS = key_paths(BASE)
DICT_PATHS = [()] + [p for p in PATHS if isinstance(functools.reduce(lambda n, k: n[k], p, BASE), dict)]
INT64 = st.integers(min_value=-2**63, max_value=2**63 - 1)
SCALARS = st.one_of(
    st.none(), st.booleans(), INT64, st.sampled_from([0, -1, 1, 2, 7, 8, 16, 255, 256, 2**31, 2**63, -2**64]),
    st.sampled_from([1024, 20000]).map(lambda bits: -(2**bits)),    # past float / past str()'s 4300 digits
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([16.0, 0.5, -0.0, 1e308, float("nan")]),
    st.text(max_size=10), st.sampled_from(["", "auto", "cpu\n", "{category}", "{0}", "{category[a]}", "null", "8"]),
    st.dates(),
)
KEYS = st.one_of(st.text(max_size=8), st.integers(-5, 5), st.none(), st.booleans(), st.dates())
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
                      max_leaves=8)


@pytest.fixture(scope="module", autouse=True)
def cached_schemas():
    """Parse each schema once (PyYAML takes ~0.1 s a file; validate() reads both on every call)."""
    load = functools.cache(P._schema)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(P, "_schema", lambda name, schemas: copy.deepcopy(load(name, schemas)))
        yield


def dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def validate_or_message(config) -> str | None:
    """None when ``config`` is valid, else the ParamsError's message; any other exception fails the test."""
    try:
        P.validate(config)
    except P.ParamsError as e:
        return str(e)
    return None


def names_path(msg: str, path: tuple) -> bool:
    """The message names the changed key: its dotted path, or (a deleted or unknown key, a list whose
    element changed) its parent's path and the key itself."""
    if dotted(path) in msg:
        return True
    parent = dotted(path[:-1]) or "(top level)"
    return parent in msg and (isinstance(path[-1], int) and not isinstance(path[-1], bool) or str(path[-1]) in msg)


def test_the_real_params_and_presets_are_valid():
    assert validate_or_message(BASE) is None
    for preset in sorted((ROOT / "configs").glob("*.yaml")):
        assert validate_or_message(P.deep_merge(BASE, yaml.safe_load(preset.read_text(encoding="utf-8")) or {})) \
            is None, preset


@FUZZ
@given(path=st.sampled_from(PATHS), value=VALUES)
@example(path=("pvtt", "clips", "fps"), value=float("nan"))                 # NaN passed every bound
@example(path=("pvtt", "clips", "width"), value=-(16**5000))                # message formatting raised ValueError
@example(path=("pvtt", "train_data", "width"), value=16.0)                  # a float taken as an integer
@example(path=("resources",), value={**BASE["resources"], 1: {"mem_mb": 1}, "x": {"mem_mb": 1}})  # sorted(): TypeError
def test_one_key_set_to_a_random_value(path, value):
    config = copy.deepcopy(BASE)
    node = config
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    msg = validate_or_message(config)
    if msg is not None:
        assert names_path(msg, path), (msg, path)


@FUZZ
@given(path=st.sampled_from(PATHS))
def test_one_key_deleted(path):
    config = copy.deepcopy(BASE)
    node = config
    for p in path[:-1]:
        node = node[p]
    del node[path[-1]]
    msg = validate_or_message(config)
    if msg is not None:
        assert names_path(msg, path), (msg, path)


@FUZZ
@given(parent=st.sampled_from(DICT_PATHS), keys=st.lists(KEYS, min_size=1, max_size=3), value=VALUES)
@example(parent=("pvtt", "masks"), keys=[1, "x"], value=None)
def test_unknown_keys_added(parent, keys, value):
    config = copy.deepcopy(BASE)
    node = functools.reduce(lambda n, k: n[k], parent, config)
    fresh = [k for k in keys if k not in node]
    for k in fresh:
        node[k] = value
    msg = validate_or_message(config)
    if msg is not None:
        assert any(names_path(msg, (*parent, k)) for k in fresh) or dotted(parent) in msg, (msg, parent, fresh)


@FUZZ
@given(config=st.one_of(VALUES, st.dictionaries(st.sampled_from([*BASE, "extra"]), VALUES, max_size=6)))
@example(config=[1])                                                         # AttributeError: list.get
@example(config=None)
def test_wholly_random_structures(config):
    msg = validate_or_message(config)
    assert msg is None or msg.startswith("invalid params:\n  params: ") or msg.startswith("params: "), msg


@pytest.mark.parametrize("path,value,fragment", [
    (("pvtt", "clips", "fps"), float("nan"), "params: pvtt.clips.fps: nan is not a finite number"),
    (("pvtt", "clips", "max_seconds"), float("inf"), "params: pvtt.clips.max_seconds: inf is not a finite number"),
    (("pvtt", "clips", "width"), -(16**5000), "params: pvtt.clips.width: <20001-bit integer> is out of range"),
    (("seed",), 2**64, "params: seed: 18446744073709551616 is out of range"),
    (("pvtt", "train_data", "width"), 16.0, "params: pvtt.train_data.width: 16.0 is not of type 'integer'"),
    (("resources",), {**BASE["resources"], 1: {"mem_mb": 1}, "x": {"mem_mb": 1}}, "resources.1.mem_mb: 1 is less"),
    (("pvtt", "filter", "l2", "learned"), {"a": [float("nan")]}, "pvtt.filter.l2.learned.a.0: nan is not a finite"),
], ids=["nan", "inf", "20001-bit", "2**64", "16.0", "mixed-keys", "nan-in-unchecked-subtree"])
def test_pinned_findings_are_params_errors(path, value, fragment):
    config = copy.deepcopy(BASE)
    functools.reduce(lambda n, k: n[k], path[:-1], config)[path[-1]] = value
    with pytest.raises(P.ParamsError) as e:
        P.validate(config)
    assert fragment in str(e.value), str(e.value)


@pytest.mark.parametrize("config", [[1], None, "params.yaml"])
def test_a_config_that_is_not_a_mapping_is_a_params_error(config):
    with pytest.raises(P.ParamsError, match=r"params: \(top level\): .* is not of type 'object'"):
        P.validate(config)


# ----------------------------------------------------------------------------- per-stage checks

STAGES = {
    "ingest": ingest.validate_params, "shots": shots.validate_params, "products": products.validate_params,
    "masks": masks.validate_params, "maskqc": maskqc.validate_params,
    "pairs": lambda params: pairs.validate_pairs_params(params["pairs"]),
}
STAGE_KEYS = {"ingest": ingest.DEFAULTS, "shots": shots.DEFAULTS, "products": products.DEFAULTS,
              "masks": masks.DEFAULTS, "maskqc": maskqc.DEFAULTS, "pairs": BASE["pvtt"]["pairs"]}
# What reaches a stage has passed params.validate: integers fit in 64 bits (beyond, see test_huge_numbers...).
STAGE_SCALARS = st.one_of(
    st.none(), st.booleans(), INT64, st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10),
    st.sampled_from([0, -1, 1, 255, 256, 0.5, 1.5, 16.0, "", "auto", "cpu\n", "content", "rembg", "{category}",
                     "{0}", "{category[a]}", "{category:>{x}}", "{category.x}"]),
    st.dates(),
)
STAGE_VALUES = st.recursive(STAGE_SCALARS, lambda inner: st.lists(inner, max_size=3)
                            | st.dictionaries(st.one_of(st.text(max_size=6), st.integers(-3, 3)), inner, max_size=3),
                            max_leaves=6)


def stage_call(stage: str, section) -> str | None:
    """None when the stage accepts ``section``, else its ValueError's message (anything else fails)."""
    try:
        STAGES[stage]({"seed": BASE["seed"], stage: section})
    except ValueError as e:
        return str(e)
    return None


def stage_names(msg: str, stage: str, keys) -> bool:
    return f"'{stage}'" in msg or any(f"{stage}.{k}" in msg for k in keys)


@FUZZ
@given(stage=st.sampled_from(sorted(STAGES)), pick=st.integers(0, 99), value=STAGE_VALUES,
       op=st.sampled_from(["set", "set", "delete", "unknown"]), unknown=st.one_of(st.integers(), st.text(max_size=6)))
def test_stage_check_with_one_key_changed(stage, pick, value, op, unknown):
    section = copy.deepcopy(BASE["pvtt"][stage])
    keys = sorted({*STAGE_KEYS[stage], *section}, key=str)
    key = keys[pick % len(keys)] if op != "unknown" else unknown
    if op == "delete":
        section.pop(key, None)
    elif op == "unknown":
        section.update({key: value, "zz_unknown": value})
    else:
        section[key] = value
    msg = stage_call(stage, section)
    if msg is not None:
        assert stage_names(msg, stage, [key, "zz_unknown"] if op == "unknown" else [key]), (msg, stage, key)


@pytest.mark.parametrize("stage,section,fragment", [
    ("masks", {"prompt": "{category[a]}"}, "masks.prompt"),                  # TypeError leaked
    ("masks", {1: 0, "x": 0}, "'masks.1' is not known"),                      # int and str keys: sorted() TypeError
    ("maskqc", {None: 0, "x": 0}, "'maskqc.None' is not known"),
])
def test_pinned_stage_findings(stage, section, fragment):
    assert fragment in stage_call(stage, section)


@FUZZ
@given(stage=st.sampled_from(sorted(STAGES)), section=STAGE_VALUES)
def test_stage_check_with_a_random_section(stage, section):
    msg = stage_call(stage, section)
    if msg is not None:
        keys = [*section] if isinstance(section, dict) else []
        assert stage_names(msg, stage, [*keys, *STAGE_KEYS[stage]]), (msg, stage)


@pytest.mark.parametrize("stage,key", [("shots", "threshold"), ("shots", "adaptive_threshold"),
                                       ("shots", "min_scene_len"), ("masks", "min_area_frac"),
                                       ("maskqc", "max_area_jump"), ("pairs", "max_aspect_change"),
                                       ("pairs", "pairs_per_shard")])
@pytest.mark.parametrize("value", [10**400, float("inf"), float("nan"), -math.inf], ids=["10**400", "inf", "nan", "-inf"])
def test_huge_numbers_and_non_finite_values_in_stage_checks(stage, key, value):
    """An int past 1e308 overflowed math.isfinite()/float() (pairs); inf passed 'a number >= 0' (shots)."""
    section = {**copy.deepcopy(BASE["pvtt"][stage]), key: value}
    msg = stage_call(stage, section)
    if isinstance(value, float):
        assert msg is not None and f"{stage}.{key}" in msg, msg
    else:                                               # a huge count or threshold may pass; an error names the key
        assert msg is None or f"{stage}.{key}" in msg, msg


def test_a_date_as_prompt_or_key_is_a_stage_error():
    assert "masks.prompt" in stage_call("masks", {"prompt": datetime.date(2024, 1, 1)})
    assert "masks." in stage_call("masks", {datetime.date(2024, 1, 1): 1, "x": 2})
