"""AVGen's workflow table: DVC stages and their params, rules passing P(rule), batches at parse time,
start-up checks naming the key, and the full-scale dry run's job count (batches, never clips)."""
from __future__ import annotations

import copy
import re
import subprocess
import sys

import pytest

from avgen.bench.dag import job_count_formula
from avgen.pipeline import MILESTONES, RULES, batches, num_clips
from genbuild import params as P
from genbuild.dvcgen import build
from genbuild.workflow import ROOT, namespace, rule_params


def test_dvc_stages_are_prefixed_and_list_the_rules_params():
    config = P.load()
    stages = {k: v for k, v in build(config)["stages"].items() if k.startswith("avgen_")}
    assert list(stages) == ["avgen_dataset", "avgen_features", "avgen_stage1", "avgen_stage2", "avgen_stage3",
                            "avgen_int8", "avgen_eval"]
    assert stages["avgen_stage3"]["params"] == sorted(["avgen.model", "avgen.train.common", "avgen.train.stage3"])
    assert stages["avgen_stage3"]["deps"][:2] == ["artifacts/avgen_features", "artifacts/avgen_stage2"]
    assert "avgen.filter" in stages["avgen_dataset"]["params"] and "seed" in stages["avgen_dataset"]["params"]
    for name, st in stages.items():
        assert st["outs"] == [f"artifacts/{MILESTONES[name.removeprefix('avgen_')].out}"]
        assert "pvtt/" not in " ".join(st["deps"]), name  # a PVTT code change never reruns AVGen
    smk = "".join(p.read_text() for p in (ROOT / "rules/avgen").glob("*.smk"))
    for rule in RULES:
        assert f'P("{rule}")' in smk or rule.startswith("avgen_stage"), rule
    assert 'P(f"avgen_{_stage}")' in smk


def test_rule_params_are_the_namespace_subtrees():
    config = P.load()
    av = config["avgen"]
    assert rule_params(config, "avgen_stage1") == {"model": av["model"], "train": {"common": av["train"]["common"],
                                                                                   "stage1": av["train"]["stage1"]}}
    assert rule_params(config, "avgen_filter") == {"filter": av["filter"]}


def test_batches_come_from_the_clip_count():
    ns = namespace(P.load(), "avgen")
    n = num_clips(ns)
    assert n == ns["sample"]["n_good"] + len(ns["sample"]["failures"])
    assert batches(ns) == [f"b{i:04d}" for i in range(-(-n // ns["data"]["clips_per_job"]))]


def _bad(mutate) -> str:
    config = P.load()
    mutate(config["avgen"])
    with pytest.raises(P.ParamsError) as e:
        P.validate(config)
    return str(e.value)


def test_bad_params_stop_at_start_up_naming_the_key():
    assert "avgen.format.size" in _bad(lambda a: a["format"].update(size=60))
    assert "avgen.filter.min_side" in _bad(lambda a: a["filter"].update(min_side=2000))
    assert "avgen.data.clips_per_job" in _bad(lambda a: a["data"].update(clips_per_job=0))
    assert "avgen.train.stage3" in _bad(lambda a: a["train"]["stage3"].pop("subset"))


def test_stand_ins_at_scale_are_refused_unless_named():
    msg = _bad(lambda a: a["model"].update(preset="3.8B"))
    assert "avgen.features.clip" in msg and "avgen.model.vocoder" in msg and "allow_stand_ins" in msg
    config = P.load()
    av = config["avgen"]
    av["model"]["preset"] = "3.8B"
    av["features"]["allow_stand_ins"] = ["clip", "clap", "vae", "vocoder"]
    P.validate(copy.deepcopy(config))  # asked for by name: allowed


def test_full_scale_dry_run_grows_with_batches_not_clips():
    res = subprocess.run([sys.executable, "-m", "avgen.bench.dag", "--clips", "200000"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    m = re.search(r"^avgen jobs=(\d+) seconds=([\d.]+)$", res.stdout.strip().splitlines()[-1])
    assert m, res.stdout
    assert int(m.group(1)) == job_count_formula(200000, 20000) == 4 * 10 + 8
    assert job_count_formula(19_500_000, 20000) == 4 * 975 + 8
