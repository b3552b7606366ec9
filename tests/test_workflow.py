"""The workflow glue: one source of truth for params/code per rule, validation, DVC, DAG scale."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from e2e_helpers import ROOT, env
from pvtt import params as P
from pvtt.dvcgen import build
from pvtt.workflow import MILESTONES, RULES, job_count_formula, rule_params


def test_dvc_yaml_is_generated_from_the_rules():
    res = subprocess.run([sys.executable, "-m", "pvtt.dvcgen", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_dvc_stages_cover_the_milestones_with_the_rules_params():
    config = P.load()
    dvc = build(config)
    assert list(dvc["stages"]) == ["dataset", "latents", "teacher_phase1", "teacher_phase2", "teacher", "student_16",
                                   "student_8", "student_4", "engine", "eval"]
    assert dvc["stages"]["teacher"]["deps"][:2] == ["artifacts/latents", "artifacts/teacher_phase2"]  # chained
    assert "teacher_phases.phase3" in dvc["stages"]["teacher"]["params"]
    assert "teacher_phases.phase3" not in dvc["stages"]["teacher_phase1"]["params"]
    # The report's HTML is eval's alone: a change to the page must not retrain the teacher.
    assert "pvtt/report.py" not in dvc["stages"]["teacher"]["deps"] and "pvtt/media.py" in dvc["stages"]["teacher"]["deps"]
    assert dvc["stages"]["student_4"]["params"] == sorted(RULES["student_4"].params)
    assert "distill.student_4" not in dvc["stages"]["student_8"]["params"]
    for name, st in dvc["stages"].items():
        assert st["cmd"].endswith(f"artifacts/{MILESTONES[name].out}")
        assert st["outs"] == [f"artifacts/{name}"]
        for dep in st["deps"]:
            assert dep.startswith("artifacts/") or (ROOT / dep).exists(), dep
    smk = (ROOT / "Snakefile").read_text() + "".join(p.read_text() for p in (ROOT / "rules").glob("*.smk"))
    for rule in RULES:
        assert f'P("{rule}")' in smk or rule.startswith(("student_", "teacher")), rule
    assert "P(_name)" in (ROOT / "rules/teacher.smk").read_text()


def test_rule_params_are_the_declared_subtrees():
    config = P.load()
    assert rule_params(config, "student_4") == {"distill": {"common": config["distill"]["common"],
                                                            "student_4": config["distill"]["student_4"]}}
    # The latent cache reads what shapes the tensors; the trainers read the tensors.
    # (and teacher phase 1's model/resolution overrides, which get a cache of their own).
    phase1 = config["teacher_phases"]["phase1"]
    assert rule_params(config, "latents") == {"model": config["model"], "train_data": config["train_data"],
                                              "teacher_phases": {"phase1": {"model": phase1["model"],
                                                                            "train_data": phase1["train_data"]}}}
    with pytest.raises(P.ParamsError, match="'nope.key'"):
        P.get_key(config, "nope.key")


def test_overlays_are_valid():
    for overlay in sorted((ROOT / "configs").glob("*.yaml")):
        P.load(ROOT / "params.yaml", [overlay])


def test_invalid_params_fail_fast_naming_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"clips": {"fps": 0}, "teacher": {"lr": -1}}))
    res = subprocess.run(["snakemake", "-n", "--cores", "1", "--configfile", str(bad)], cwd=ROOT, env=env(),
                         capture_output=True, text=True)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "clips.fps" in out and "teacher.lr" in out


def test_bench_dag_job_count_follows_the_formula():
    res = subprocess.run([sys.executable, "-m", "pvtt.bench_dag"], cwd=ROOT, env=env(), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    m = re.search(r"^jobs=(\d+) seconds=([\d.]+)$", res.stdout.strip().splitlines()[-1])
    assert m, res.stdout
    jobs, seconds = int(m.group(1)), float(m.group(2))
    # 500 videos, 53 products, ceil(500*5*14/256)=137 shards: grows with videos and shards only.
    assert jobs == job_count_formula(500, 53, 137, sample=False)
    assert seconds < 30
