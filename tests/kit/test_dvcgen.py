"""dvc.yaml from a pipeline's table: prefixed stage names, namespaced params, upstream artifacts, code deps."""
from __future__ import annotations

from genbuild.dvcgen import _stages
from genbuild.workflow import Milestone, Pipeline, Rule


def test_a_prefixed_pipeline_gets_its_own_stages_params_and_deps(tmp_path):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "avgen_filter.py").write_text("from avgen.filter import main\n")
    (tmp_path / "avgen").mkdir()
    (tmp_path / "avgen" / "__init__.py").write_text("")
    (tmp_path / "avgen" / "filter.py").write_text("def main():\n    pass\n")
    pipeline = Pipeline(
        "avgen",
        {"avgen_filter": Rule(("seed", "filter.video", "video"), "avgen_filter", "data")},
        {"dataset": Milestone(("avgen_filter",), "avgen_dataset"),
         "features": Milestone(("avgen_filter",), "avgen_features", ("dataset",), metrics=("m.json",))},
        stage_prefix="avgen_",
        extra_deps=lambda config, m: ["data/vggsound.csv"] if m == "dataset" else [],
    )
    stages = _stages({"paths": {"artifacts": "artifacts"}}, pipeline, tmp_path)
    assert list(stages) == ["avgen_dataset", "avgen_features"]
    ds, feat = stages["avgen_dataset"], stages["avgen_features"]
    assert ds["params"] == ["avgen.filter.video", "seed", "video"]
    assert ds["deps"] == ["avgen/__init__.py", "avgen/filter.py", "rules/avgen/data.smk", "scripts/avgen_filter.py",
                          "data/vggsound.csv"]
    assert feat["deps"][0] == "artifacts/avgen_dataset"  # the upstream milestone's artifact
    assert feat["cmd"] == "snakemake --cores all artifacts/avgen_features" and feat["outs"] == ["artifacts/avgen_features"]
