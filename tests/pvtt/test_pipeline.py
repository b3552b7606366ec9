"""The workflow glue: one source of truth for params/code per rule, validation, DVC, DAG scale."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml
from e2e_helpers import ROOT, env

from genbuild import params as P
from genbuild.dvcgen import build
from genbuild.imports import closure_files
from genbuild.workflow import find_rule, pipelines, rule_params
from pvtt.pipeline import MILESTONES, RULES, job_count_formula


def test_dvc_yaml_is_generated_from_the_rules():
    res = subprocess.run([sys.executable, "-m", "genbuild.dvcgen", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_dvc_stages_cover_the_milestones_with_the_rules_params():
    config = P.load()
    dvc = build(config)
    dvc["stages"] = {k: v for k, v in dvc["stages"].items() if k in MILESTONES}  # PVTT's (AVGen's are avgen_*)
    assert list(dvc["stages"]) == ["dataset", "latents", "teacher_phase1", "teacher_phase2", "teacher", "student_16",
                                   "student_8", "student_4", "student_alt", "engine", "eval"]
    # The comparison student starts where student_4 does; eval reads it, the engine does not.
    assert dvc["stages"]["student_alt"]["deps"][:3] == ["artifacts/latents", "artifacts/teacher", "artifacts/student_8"]
    assert "artifacts/student_alt" in dvc["stages"]["eval"]["deps"]
    assert "artifacts/student_alt" not in dvc["stages"]["engine"]["deps"]
    assert dvc["stages"]["teacher"]["deps"][:3] == ["artifacts/dataset", "artifacts/latents", "artifacts/teacher_phase2"]  # chained
    assert "pvtt.teacher_phases.phase3" in dvc["stages"]["teacher"]["params"]
    assert "pvtt.teacher_phases.phase3" not in dvc["stages"]["teacher_phase1"]["params"]
    # The report's HTML is eval's alone: a change to the page must not retrain the teacher.
    assert "pvtt/eval/report.py" not in dvc["stages"]["teacher"]["deps"] and "genbuild/media.py" in dvc["stages"]["teacher"]["deps"]
    # Nor does a change to the packing code or to the pipeline table: trainers depend on the shard format only.
    for stage in ("latents", "teacher", "student_4"):
        assert "pvtt/pack/pack.py" not in dvc["stages"][stage]["deps"], stage
        assert "pvtt/pack/format.py" in dvc["stages"][stage]["deps"], stage
        assert "pvtt/pipeline.py" not in dvc["stages"][stage]["deps"], stage
    assert dvc["stages"]["student_4"]["params"] == sorted(f"pvtt.{k}" for k in RULES["student_4"].params)
    assert dvc["stages"]["dataset"]["params"][0] == "pvtt.backgrounds" and "seed" in dvc["stages"]["dataset"]["params"]
    assert "pvtt.distill.student_4" not in dvc["stages"]["student_8"]["params"]
    for name, st in dvc["stages"].items():
        assert st["cmd"].endswith(f"artifacts/{MILESTONES[name].out}")
        assert st["outs"] == [f"artifacts/{name}"]
        for dep in st["deps"]:
            assert dep.startswith("artifacts/") or (ROOT / dep).exists(), dep
    smk = "".join(p.read_text() for p in (ROOT / "rules").rglob("*.smk"))
    for rule in RULES:
        assert f'P("{rule}")' in smk or rule.startswith(("student_", "teacher")), rule
    assert "P(_name)" in (ROOT / "rules/pvtt/teacher.smk").read_text()


def test_rule_params_are_the_declared_subtrees_of_the_namespace():
    config = P.load()
    pv = config["pvtt"]
    assert rule_params(config, "student_4") == {"distill": {"common": pv["distill"]["common"], "gate": pv["distill"]["gate"],
                                                            "student_4": pv["distill"]["student_4"]},
                                                "eval": {k: pv["eval"][k] for k in ("teacher_steps", "cfg_scale")}}
    # Shared keys come from the top level, the pipeline's from its namespace, in the same un-namespaced shape.
    encoder = {k: config["video"][k] for k in ("crf", "preset", "threads")}
    assert rule_params(config, "sample") == {"seed": config["seed"], "sample": pv["sample"], "video": encoder}
    # The latent cache reads what shapes the tensors; the trainers read the tensors.
    # (and teacher phase 1's model/resolution overrides, which get a cache of their own).
    phase1 = pv["teacher_phases"]["phase1"]
    assert rule_params(config, "latents") == {"model": pv["model"], "train_data": pv["train_data"],
                                              "teacher_phases": {"phase1": {"model": phase1["model"],
                                                                            "train_data": phase1["train_data"]}}}
    with pytest.raises(P.ParamsError, match="'nope.key'"):
        P.get_key(config, "nope.key")
    del pv["clips"]
    with pytest.raises(P.ParamsError, match="'pvtt.clips'"):
        rule_params(config, "clips")


def test_process_time_limits_change_no_rule_params():
    """video.timeouts bound processes, not results: no rule's params (Snakemake's rerun trigger,
    DVC's params) may change with them."""
    config = P.load()
    before = {r: rule_params(config, r) for r in RULES}
    config["video"]["timeouts"] = {"probe": 1, "count": 2, "decode": 3, "encode": 4, "stream": 5}
    assert {r: rule_params(config, r) for r in RULES} == before


@pytest.mark.parametrize("section,key,value", [
    ("masks", "min_area_frac", 1), ("shots", "threshold", 256), ("pairs", "expected_clips_per_video", 1.5),
    ("products", "white_threshold", 0), ("maskqc", "max_area_jump", 2),
])
def test_values_a_stage_refuses_stop_at_start_up(section, key, value):
    """The schema lets these through; the stage's own check would refuse them hours later in a job."""
    config = P.load()
    config["pvtt"][section][key] = value
    with pytest.raises(P.ParamsError, match=rf"'pvtt\.{section}\.{key}'"):
        P.validate(config)


def test_overlays_are_valid():
    for overlay in sorted((ROOT / "configs").glob("*.yaml")):
        P.load(ROOT / "params.yaml", [overlay])


def test_params_are_namespaced_so_pipelines_cannot_clash(tmp_path):
    config = P.load()
    assert set(config) == {"seed", "paths", "video", "resources", *pipelines()}
    stale = {**config, "teacher": {"lr": 1e-3}}  # a PVTT key left at the top level
    with pytest.raises(P.ParamsError, match="teacher"):
        P.validate(stale)
    del config["pvtt"]
    with pytest.raises(P.ParamsError, match="'pvtt' is a required property"):
        P.validate(config)


def test_invalid_params_fail_fast_naming_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"pvtt": {"clips": {"fps": 0}, "teacher": {"lr": -1}}, "video": {"crf": 99}}))
    res = subprocess.run(["snakemake", "-n", "--cores", "1", "--configfile", str(bad)], cwd=ROOT, env=env(),
                         capture_output=True, text=True)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "pvtt.clips.fps" in out and "pvtt.teacher.lr" in out and "video.crf" in out


def test_bench_dag_job_count_follows_the_formula():
    res = subprocess.run([sys.executable, "-m", "pvtt.bench.dag"], cwd=ROOT, env=env(), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    m = re.search(r"^jobs=(\d+) seconds=([\d.]+)$", res.stdout.strip().splitlines()[-1])
    assert m, res.stdout
    jobs, seconds = int(m.group(1)), float(m.group(2))
    # 500 videos in batches of 10 (configs/full.yaml), 53 products, ceil(500*5*14/256)=137 shards:
    # grows with batches of videos and with shards only.
    assert jobs == job_count_formula(500, 53, 137, sample=False, videos_per_job=10) == 6 * 50 + 53 + 2 * 137 + 15
    assert seconds < 30


PER_VIDEO_RULES = ("ingest", "shots", "clips", "masks", "maskqc", "backgrounds")


def _dry_run_jobs(tmp_path, n_videos: int, per_job: int) -> dict[str, int]:
    """{rule: jobs} of `snakemake -n all_pvtt` on the sample with ``n_videos`` videos, ``per_job`` per job."""
    cfg = tmp_path / f"v{n_videos}_k{per_job}.yaml"
    cfg.write_text(yaml.safe_dump({"pvtt": {"sample": {"n_videos": n_videos}, "data": {"videos_per_job": per_job}}}))
    # --forceall: every job of the DAG, whatever this checkout has built already
    res = subprocess.run(["snakemake", "-n", "--forceall", "--cores", "1", "all_pvtt", "--configfile", str(cfg), "--quiet", "rules"],
                         cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    stats = res.stdout[res.stdout.index("Job stats:"):] if "Job stats:" in res.stdout else res.stdout
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}


def test_job_count_grows_with_batches_not_videos(tmp_path):
    """The six per-video stages run once per batch of pvtt.data.videos_per_job videos: twice the videos in
    the same number of batches adds no job to them; the same videos in smaller batches do."""
    base = _dry_run_jobs(tmp_path, 8, 4)           # 2 batches
    doubled = _dry_run_jobs(tmp_path, 16, 8)       # twice the videos, still 2 batches
    finer = _dry_run_jobs(tmp_path, 8, 1)          # 8 batches
    for rule in PER_VIDEO_RULES:
        assert base[rule] == doubled[rule] == 2 and finer[rule] == 8, rule
    for (n, k), jobs in (((8, 4), base), ((16, 8), doubled), ((8, 1), finer)):
        assert jobs["total"] == job_count_formula(n, jobs["products"], jobs["synth"], sample=True, videos_per_job=k)
    assert doubled["total"] - base["total"] == 2 * (doubled["synth"] - base["synth"])   # only the pair shards grew


def test_rule_code_is_the_import_closure_of_its_script():
    """A rule's code inputs are what its script runs: a lazily imported backend and a module
    registered by import_module count; modules it never imports do not."""
    files = find_rule("masks")[1].code_files()
    assert files == closure_files("scripts/masks.py", ROOT)
    assert {"scripts/masks.py", "pvtt/data/masks.py", "pvtt/data/backends/grounded_sam2.py",
            "genbuild/io/masks.py", "pvtt/__init__.py", "pvtt/data/__init__.py"} <= set(files)
    assert "pvtt/train/teacher.py" not in files
    filter_files = RULES["filter"].code_files()
    assert {"pvtt/filter/learned.py", "pvtt/filter/vlm.py", "genbuild/metrics/learned.py"} <= set(filter_files)
