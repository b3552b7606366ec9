"""params.yaml: loading, overlays and validation, one schema per namespace.

``schemas/shared.schema.yaml`` covers the shared top-level keys (seed, paths, video,
resources); each registered pipeline validates its own namespace against
``schemas/<pipeline>.schema.yaml`` and then checks the relations a schema cannot express
(``Pipeline.check_params``). An invalid value fails fast at start-up with the key's full
dotted name, e.g. ``params: pvtt.clips.fps: 0 is less than the minimum of 1``.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas"


class ParamsError(ValueError):
    pass


def get_key(config: dict, dotted: str, name: str | None = None) -> Any:
    """``a.b.c`` of a nested dict; a missing key raises naming ``name`` (default: ``dotted``)."""
    cur: Any = config
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise ParamsError(f"params: key '{name or dotted}' is missing")
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


def _schema(name: str, schemas: Path) -> dict:
    with open(schemas / f"{name}.schema.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


# ``type: integer`` is an int (jsonschema also takes 16.0, which the stages' own checks refuse);
# ``type: number`` is finite (NaN passes every minimum/maximum comparison).
_TYPES = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many({
    "integer": lambda checker, v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda checker, v: isinstance(v, int) and not isinstance(v, bool) or isinstance(v, float) and math.isfinite(v),
})
_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=_TYPES)
_INT_BITS = 63   # a params integer is a 64-bit one for numpy, torch and ffmpeg


def _path_key(path) -> list[tuple[int, Any]]:
    """Sort key of an error's path: YAML keys may be ints, None or dates next to strings."""
    return [(0, p, "") if isinstance(p, int) and not isinstance(p, bool) else (1, 0, str(p)) for p in path]


def _errors(schema: dict, doc: Any, prefix: str = "") -> list[str]:
    validator = _Validator(schema)
    found = sorted(validator.iter_errors(doc), key=lambda e: _path_key(e.absolute_path))
    keys = [prefix + ".".join(str(p) for p in e.absolute_path) for e in found]
    return [f"params: {k.rstrip('.') or '(top level)'}: {e.message}" for k, e in zip(keys, found)]


def _bad_numbers(doc: Any) -> list[str]:
    """Messages for every non-finite float and every integer beyond 64 bits, keys included, found
    before the schema runs: jsonschema accepts NaN against any bound, and formatting a message
    about an integer of more than 4300 digits (a YAML hex literal) raises ValueError."""
    out: list[str] = []
    stack, seen = [("", doc)], set()
    while stack:
        where, node = stack.pop()
        if isinstance(node, (dict, list)):
            if id(node) in seen:                       # a YAML alias cycle
                continue
            seen.add(id(node))
            for k, v in (node.items() if isinstance(node, dict) else enumerate(node)):
                label = _label(k)
                if isinstance(node, dict) and _bad_number(k):
                    out.append(f"params: {where or '(top level)'}: key {label} {_bad_number(k)}")
                stack.append((f"{where}.{label}" if where else label, v))
        elif _bad_number(node):
            out.append(f"params: {where or '(top level)'}: {_label(node)} {_bad_number(node)}")
    return sorted(out)


def _bad_number(v: Any) -> str | None:
    if isinstance(v, float) and not math.isfinite(v):
        return "is not a finite number"
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > _INT_BITS:
        return f"is out of range (at most {_INT_BITS} bits and a sign)"
    return None


def _label(v: Any) -> str:
    """str() of a key or value for a message; an integer too long to print is described."""
    try:
        return str(v)
    except ValueError:                                 # over Python's 4300-digit limit
        return f"<{v.bit_length()}-bit integer>"


def validate(config: dict, pipelines: dict | None = None, schemas: str | Path = SCHEMAS) -> None:
    """Check the shared keys, then every registered pipeline's namespace and relations."""
    from genbuild.workflow import pipelines as registered  # the registry imports this module

    pipelines = registered() if pipelines is None else pipelines
    msgs = _bad_numbers(config)
    if msgs:
        raise ParamsError("invalid params:\n  " + "\n  ".join(msgs[:10]))
    shared = _schema("shared", Path(schemas))
    # Every registered pipeline's namespace is a required object; its contents are checked below.
    shared.setdefault("properties", {}).update({n: {"type": "object"} for n in pipelines})
    shared["required"] = sorted(set(shared.get("required", [])) | set(pipelines))
    msgs = _errors(shared, config)
    if not isinstance(config, dict):                   # the message above says so; nothing else to check
        raise ParamsError("invalid params:\n  " + "\n  ".join(msgs[:10]))
    for name in pipelines:
        if isinstance(config.get(name), dict):
            msgs += _errors(_schema(name, Path(schemas)), config[name], f"{name}.")
    if msgs:
        raise ParamsError("invalid params:\n  " + "\n  ".join(msgs[:10]))
    for name, p in pipelines.items():
        if p.check_params is not None:
            p.check_params(config[name], config)
