"""Params: shared keys at the top level, one namespace per pipeline, each with its own schema."""
from __future__ import annotations

import pytest
import yaml

from genbuild import params as P
from genbuild.workflow import Milestone, Pipeline, Rule, rule_params


def _schemas(tmp_path):
    (tmp_path / "shared.schema.yaml").write_text(yaml.safe_dump({
        "type": "object", "required": ["seed"], "additionalProperties": False,
        "properties": {"seed": {"type": "integer", "minimum": 0}}}))
    for name in ("one", "two"):
        (tmp_path / f"{name}.schema.yaml").write_text(yaml.safe_dump({
            "type": "object", "additionalProperties": False,
            "properties": {"filter": {"type": "object", "properties": {"min": {"type": "number", "minimum": 0}}}}}))
    return tmp_path


def _pipeline(name, check=None):
    return Pipeline(name, {f"{name}_filter": Rule(("seed", "filter"), "x", "x")}, {"d": Milestone((), "d")},
                    stage_prefix=f"{name}_", check_params=check)


def test_two_pipelines_use_the_same_key_names_without_clashing(tmp_path):
    pipes = {"one": _pipeline("one"), "two": _pipeline("two")}
    config = {"seed": 1, "one": {"filter": {"min": 0.5}}, "two": {"filter": {"min": 2}}}
    P.validate(config, pipes, _schemas(tmp_path))
    bad = {"seed": 1, "one": {"filter": {"min": -1}}, "two": {"filter": {"min": "x"}}, "filter": {}}
    with pytest.raises(P.ParamsError) as e:
        P.validate(bad, pipes, tmp_path)
    msg = str(e.value)
    assert "one.filter.min: -1 is less than the minimum of 0" in msg and "two.filter.min" in msg
    assert "(top level): Additional properties are not allowed ('filter' was unexpected)" in msg
    assert pipes["two"].params_key("filter.min") == "two.filter.min" and pipes["two"].params_key("seed") == "seed"


def test_a_pipeline_checks_its_relations_after_the_schema(tmp_path):
    def check(ns, config):
        if ns["filter"]["min"] > 1:
            raise P.ParamsError("params: one.filter.min above 1")

    with pytest.raises(P.ParamsError, match="one.filter.min above 1"):
        P.validate({"seed": 0, "one": {"filter": {"min": 3}}}, {"one": _pipeline("one", check)}, _schemas(tmp_path))
    with pytest.raises(P.ParamsError, match="'one' is a required property"):
        P.validate({"seed": 0}, {"one": _pipeline("one")}, _schemas(tmp_path))


def test_rule_params_keep_the_unnamespaced_shape_scripts_read():
    config = P.load()
    ns = config["pvtt"]
    assert rule_params(config, "pairs") == {"seed": config["seed"], "pairs": ns["pairs"],
                                            "data": {"videos_per_job": ns["data"]["videos_per_job"]}}
