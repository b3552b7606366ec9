"""params.yaml: loading, overlays and validation, one schema per namespace.

``schemas/shared.schema.yaml`` covers the shared top-level keys (seed, paths, video,
resources); each registered pipeline validates its own namespace against
``schemas/<pipeline>.schema.yaml`` and then checks the relations a schema cannot express
(``Pipeline.check_params``). An invalid value fails fast at start-up with the key's full
dotted name, e.g. ``params: pvtt.clips.fps: 0 is less than the minimum of 1``.
"""
from __future__ import annotations

import copy
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


def _errors(schema: dict, doc: Any, prefix: str = "") -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    found = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    keys = [prefix + ".".join(str(p) for p in e.absolute_path) for e in found]
    return [f"params: {k.rstrip('.') or '(top level)'}: {e.message}" for k, e in zip(keys, found)]


def validate(config: dict, pipelines: dict | None = None, schemas: str | Path = SCHEMAS) -> None:
    """Check the shared keys, then every registered pipeline's namespace and relations."""
    from genbuild.workflow import pipelines as registered  # the registry imports this module

    pipelines = registered() if pipelines is None else pipelines
    shared = _schema("shared", Path(schemas))
    # Every registered pipeline's namespace is a required object; its contents are checked below.
    shared.setdefault("properties", {}).update({n: {"type": "object"} for n in pipelines})
    shared["required"] = sorted(set(shared.get("required", [])) | set(pipelines))
    msgs = _errors(shared, config)
    for name in pipelines:
        if isinstance(config.get(name), dict):
            msgs += _errors(_schema(name, Path(schemas)), config[name], f"{name}.")
    if msgs:
        raise ParamsError("invalid params:\n  " + "\n  ".join(msgs[:10]))
    for name, p in pipelines.items():
        if p.check_params is not None:
            p.check_params(config[name], config)
