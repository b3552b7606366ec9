"""The workflow table every pipeline fills in, and what the Snakefile and dvc.yaml derive from it.

A pipeline (``pvtt``, later ``avgen``) declares a :class:`Pipeline`: its rules (the params
keys each reads and the script it runs) and its milestones (the DVC stages, the rules they
cover and the artifact they version). From that one table:

- the Snakefile passes each rule exactly its params (``rule_params_json``: Snakemake reruns
  on their change) and lists its code as inputs (``Rule.code_files``: the import closure of
  its script, so a code change reruns it too);
- ``genbuild.dvcgen`` writes dvc.yaml (params, deps, outs of every milestone);
- ``genbuild.versions`` knows which milestones a release tag names.

Params are namespaced: a pipeline's keys live under ``<pipeline>:`` in params.yaml, except the
shared ones (``SHARED_KEYS``) that every pipeline reads from the top level. A rule names its
keys without the namespace; the params a script receives keep that un-namespaced shape.
Pipelines register through the ``genbuild.pipelines`` entry point group (pyproject.toml), so
this kit never imports one.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from genbuild.imports import closure_files
from genbuild.params import get_key

ROOT = Path(__file__).resolve().parents[1]
SHARED_KEYS = ("seed", "paths", "video", "resources")
ENTRY_POINT_GROUP = "genbuild.pipelines"


@dataclass(frozen=True)
class Rule:
    """One Snakemake rule: the params keys it reads and its entry point ``scripts/<script>.py``."""

    params: tuple[str, ...]
    script: str
    smk: str               # its rules file, rules/<pipeline>/<smk>.smk

    def code_files(self, root: Path = ROOT) -> list[str]:
        return script_code_files(self.script, root)


@dataclass(frozen=True)
class Milestone:
    """One DVC stage: the rules it covers and the artifact (under paths.artifacts) it versions."""

    rules: tuple[str, ...]
    out: str
    upstream: tuple[str, ...] = ()      # names of this pipeline's milestones whose artifacts it reads
    metrics: tuple[str, ...] = ()       # files in its artifact that `dvc metrics` reads
    plots: tuple[str, ...] = ()         # DVCLive plot dirs in its artifact (`dvc plots show`), x = step


@dataclass(frozen=True)
class Pipeline:
    """A model family's part of the DAG. ``name`` is its params namespace, package and rules dir."""

    name: str
    rules: dict[str, Rule]
    milestones: dict[str, Milestone]
    stage_prefix: str = ""                                   # DVC stage names: prefix + milestone
    check_params: Callable[[dict, dict], None] | None = None  # (its namespace, the whole config): relations
    extra_deps: Callable[[dict, str], list[str]] = lambda config, milestone: []  # e.g. an input manifest
    releases: dict[str, tuple[str, ...]] = field(default_factory=dict)  # release kind -> milestones

    def stage(self, milestone: str) -> str:
        return self.stage_prefix + milestone

    def params_key(self, key: str) -> str:
        """The key's dotted name in params.yaml (namespaced unless shared)."""
        return key if key.split(".")[0] in SHARED_KEYS else f"{self.name}.{key}"


@lru_cache(maxsize=1)
def pipelines() -> dict[str, Pipeline]:
    """The registered pipelines by name (entry point group ``genbuild.pipelines``)."""
    found = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        p = ep.load()
        if p.name != ep.name:
            raise ValueError(f"entry point {ep.name} = {ep.value} declares pipeline '{p.name}'")
        found[p.name] = p
    if not found:
        raise RuntimeError(f"no pipeline registered under the '{ENTRY_POINT_GROUP}' entry points: "
                           "is the project installed (`make setup`, pip install -e .)?")
    return found


def find_rule(name: str) -> tuple[Pipeline, Rule]:
    """The pipeline that owns rule ``name``, and the rule (rule names are unique across pipelines)."""
    owners = [(p, p.rules[name]) for p in pipelines().values() if name in p.rules]
    if len(owners) != 1:
        raise KeyError(f"rule '{name}' is {'defined by several pipelines' if owners else 'not in any pipeline'}")
    return owners[0]


@cache
def _closure(script: str, root: Path) -> tuple[str, ...]:
    return tuple(closure_files(f"scripts/{script}.py", root))


def script_code_files(script: str, root: Path = ROOT) -> list[str]:
    """Repo-relative files that ``scripts/<script>.py`` runs (the script included)."""
    return list(_closure(script, Path(root).resolve()))


def namespace(config: dict, pipeline: Pipeline | str) -> dict:
    """A pipeline's params with the shared keys merged in: what its library code reads."""
    name = pipeline if isinstance(pipeline, str) else pipeline.name
    return {**config.get(name, {}), **{k: config[k] for k in SHARED_KEYS if k in config}}


def rule_params(config: dict, rule: str) -> dict:
    """The params subtree a rule reads, nested as in its namespace (e.g. {"distill": {"common": ...}})."""
    pipeline, r = find_rule(rule)
    view = namespace(config, pipeline)
    out: dict[str, Any] = {}
    for key in r.params:
        parts = key.split(".")
        cur = out
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = get_key(view, key, pipeline.params_key(key))
    return out


def rule_params_json(config: dict, rule: str) -> str:
    return json.dumps(rule_params(config, rule), sort_keys=True, separators=(",", ":"))
