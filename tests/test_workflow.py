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
    assert dvc["stages"]["teacher"]["deps"][:3] == ["artifacts/dataset", "artifacts/latents", "artifacts/teacher_phase2"]  # chained
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


def _import_time_nodes(tree):
    """The nodes that run when the module is imported: function bodies (lazy imports, which run
    only when called, e.g. pack's index builder that the trainers never call) are left out."""
    import ast

    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        todo.extend(c for c in ast.iter_child_nodes(node)
                    if not isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


def _pvtt_imports(path, root):
    """pvtt modules ``path`` imports at import time (``import``/``from`` statements, and
    ``importlib.import_module`` as the stage modules use to register their backends), as
    repo-relative file paths."""
    import ast

    pkg = path.relative_to(root).with_suffix("").parts[:-1] if path.is_relative_to(root / "pvtt") else ()
    names = set()
    for node in _import_time_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = list(pkg[: len(pkg) - node.level + 1]) if node.level else []
            mod = base + (node.module.split(".") if node.module else [])
            names.add(tuple(mod))
            names.update(tuple(mod + [a.name]) for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(tuple(a.name.split(".")) for a in node.names)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant)):
            rel = node.args[0].value
            dots = len(rel) - len(rel.lstrip("."))
            names.add(tuple(list(pkg[: len(pkg) - dots + 1]) + rel.lstrip(".").split(".")) if dots else tuple(rel.split(".")))
    out = set()
    for mod in names:
        if mod and mod[0] == "pvtt":
            for cand in (root.joinpath(*mod).with_suffix(".py"), root.joinpath(*mod, "__init__.py")):
                if cand.is_file():
                    out.add(cand)
                    for i in range(1, len(mod)):  # a package's __init__ runs on import
                        init = root.joinpath(*mod[:i], "__init__.py")
                        if init.is_file():
                            out.add(init)
    return out


def test_every_rule_lists_the_code_it_imports():
    """A rule's code inputs are the closure of what its script imports: a change to any module a
    stage runs (a backend registered from the bottom of its stage module included) reruns it."""
    for name, rule in RULES.items():
        seen, todo = set(), [ROOT / "scripts" / f"{rule.script}.py"]
        while todo:
            f = todo.pop()
            if f in seen:
                continue
            seen.add(f)
            todo.extend(_pvtt_imports(f, ROOT) - seen)
        needed = {str(f.relative_to(ROOT)) for f in seen if f.parts[-2] != "scripts"}
        missing = sorted(needed - set(rule.code_files()))
        assert not missing, f"rule {name} runs {missing} without listing them (pvtt/workflow.py RULES)"
