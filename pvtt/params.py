"""params.yaml: loading, overlays and validation against schemas/params.schema.yaml.

An invalid value fails fast at start-up with the dotted name of the key, e.g.
``params: clips.fps: 0 is less than the minimum of 1``.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "schemas" / "params.schema.yaml"


class ParamsError(ValueError):
    pass


def get_key(config: dict, dotted: str) -> Any:
    cur: Any = config
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise ParamsError(f"params: key '{dotted}' is missing")
        cur = cur[part]
    return cur


def deep_merge(base: dict, overlay: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (overlay or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load(path: str | Path = ROOT / "params.yaml", overlays: list[str | Path] = ()) -> dict:
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    for o in overlays:
        with open(o, encoding="utf-8") as f:
            config = deep_merge(config, yaml.safe_load(f) or {})
    validate(config)
    return config


def validate(config: dict, schema_path: str | Path = SCHEMA) -> None:
    with open(schema_path, encoding="utf-8") as f:
        schema = yaml.safe_load(f)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        msgs = []
        for e in errors[:10]:
            key = ".".join(str(p) for p in e.absolute_path) or "(top level)"
            msgs.append(f"params: {key}: {e.message}")
        raise ParamsError("invalid params:\n  " + "\n  ".join(msgs))
    _check_relations(config)


def _check_relations(c: dict) -> None:
    cl = c["clips"]
    if cl["min_seconds"] > cl["max_seconds"]:
        raise ParamsError(f"params: clips.min_seconds ({cl['min_seconds']}) exceeds clips.max_seconds ({cl['max_seconds']})")
    td = c["train_data"]
    for k in ("width", "height"):
        if td[k] % 8:
            raise ParamsError(f"params: train_data.{k}: {td[k]} is not a multiple of 8 (codec x patch size)")
    lo, hi = c["sample"]["cuts_per_video"]
    if lo > hi:
        raise ParamsError(f"params: sample.cuts_per_video: [{lo}, {hi}] is not a range")
