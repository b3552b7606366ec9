"""What the Snakefile and dvc.yaml both need to know, defined once.

- ``RULES``: for every rule, the params keys it reads and the library code it runs. The
  Snakefile passes exactly those params to the rule (so Snakemake reruns on their change) and
  lists the code as inputs (so Snakemake reruns on code changes too); ``pvtt.dvcgen`` derives
  each DVC stage's params and deps from the same table.
- ``MILESTONES``: the DVC stages, the rules they cover and the artifact they version.
- input listing: the ids of raw videos and products, known at parse time (from the sample
  params, or from the external manifest), so the DAG never needs a checkpoint.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .params import get_key

SHARED_CODE = ["pvtt/__init__.py", "pvtt/cli.py", "pvtt/manifest.py", "pvtt/io/__init__.py", "pvtt/io/atomic.py",
               "pvtt/io/jsonio.py", "pvtt/io/rejects.py", "pvtt/io/masks.py", "pvtt/io/video.py",
               "pvtt/registry.py"]
MODEL_CODE = ["pvtt/models/__init__.py", "pvtt/models/base.py", "pvtt/models/bundle.py", "pvtt/models/codec.py", "pvtt/models/dit.py",
              "pvtt/models/encoders.py", "pvtt/models/sampler.py", "pvtt/models/weights.py",
              "pvtt/train/__init__.py", "pvtt/train/data.py", "pvtt/train/loader.py", "pvtt/train/flow.py",
              "pvtt/pack.py"]

# The data stages' modules with what they import (a backend module imports its stage and back).
INGEST_CODE = ["pvtt/ingest.py", "pvtt/download.py"]
MASKS_CODE = ["pvtt/masks.py", "pvtt/metrics.py", "pvtt/backends/__init__.py", "pvtt/backends/grounded_sam2.py"]
BACKGROUNDS_CODE = ["pvtt/backgrounds.py", "pvtt/backends/wan_vace.py", *MASKS_CODE]

# What every training rule runs besides its own module: the latent reader, checkpoints, DDP.
TRAIN_CODE = MODEL_CODE + ["pvtt/latents.py", "pvtt/phases.py", "pvtt/train/checkpoint.py",
                           "pvtt/train/distributed.py"]
TEACHER_CODE = TRAIN_CODE + ["pvtt/teacher.py", "pvtt/train/lora.py", "pvtt/train/periodic_eval.py",
                             "pvtt/train/tracking.py", "pvtt/train/zero.py", "pvtt/media.py", "pvtt/metrics.py"]
# The teacher's chained phases: (phase, rule). Phase 3's rule is `teacher`, what the students distil.
TEACHER_PHASES = (("phase1", "teacher_phase1"), ("phase2", "teacher_phase2"), ("phase3", "teacher"))


@dataclass(frozen=True)
class Rule:
    params: tuple[str, ...]
    code: tuple[str, ...]
    script: str
    smk: str

    def code_files(self) -> list[str]:
        return sorted(set(SHARED_CODE) | set(self.code) | {f"scripts/{self.script}.py"})


def _r(params, code, script, smk):
    return Rule(tuple(params), tuple(code), script, smk)


RULES: dict[str, Rule] = {
    "sample": _r(["seed", "sample", "video"], ["pvtt/sample.py"], "sample", "data"),
    "ingest": _r(["ingest"], INGEST_CODE, "ingest", "data"),
    "shots": _r(["shots"], ["pvtt/shots.py"], "shots", "data"),
    "clips": _r(["clips", "video"], ["pvtt/clips.py"], "clips", "data"),
    "products": _r(["products", "ingest"], ["pvtt/products.py", "pvtt/backends/__init__.py", *INGEST_CODE], "products", "data"),
    "index": _r([], ["pvtt/index.py"], "index", "data"),
    "masks": _r(["masks"], MASKS_CODE, "masks", "segment"),
    "maskqc": _r(["maskqc"], ["pvtt/maskqc.py", *MASKS_CODE], "maskqc", "segment"),
    "backgrounds": _r(["backgrounds", "video"], BACKGROUNDS_CODE, "backgrounds", "segment"),
    "pairs": _r(["seed", "pairs"], ["pvtt/pairs.py"], "pairs", "synth"),
    "synth": _r(["seed", "synth", "video"], ["pvtt/synth.py", "pvtt/backends/flux_wan_i2v.py", *BACKGROUNDS_CODE],
                "synth", "synth"),
    "filter": _r(["filter.l1", "filter.l2", "filter.l3.vlm"],
                 ["pvtt/filters.py", "pvtt/metrics.py", "pvtt/filter_learned.py", "pvtt/vlm_score.py", "pvtt/quality.py",
                  "pvtt/models/__init__.py", "pvtt/models/encoders.py", "pvtt/models/weights.py", "pvtt/models/i3d.py"],
                 "filter", "filter"),
    "review": _r(["seed", "filter.l3"], ["pvtt/review.py"], "review", "filter"),
    "pack": _r(["seed", "pack"], ["pvtt/pack.py", "pvtt/manifest.py", "pvtt/index.py", "pvtt/dataset_index.py",
                                  "pvtt/dataset_card.py"], "pack", "pack"),
    "latents": _r(["model", "train_data", "teacher_phases.phase1.model", "teacher_phases.phase1.train_data"],
                  MODEL_CODE + ["pvtt/latents.py", "pvtt/phases.py"], "latents", "latents"),
    **{name: _r(["model", "train_data", "teacher", f"teacher_phases.{phase}"], TEACHER_CODE, "teacher", "teacher")
       for phase, name in TEACHER_PHASES},
    "student_16": _r(["distill.common", "distill.student_16"], TRAIN_CODE + ["pvtt/distill.py", "pvtt/train/dmd.py"], "distill", "distill"),
    "student_8": _r(["distill.common", "distill.student_8"], TRAIN_CODE + ["pvtt/distill.py", "pvtt/train/dmd.py"], "distill", "distill"),
    "student_4": _r(["distill.common", "distill.student_4"], TRAIN_CODE + ["pvtt/distill.py", "pvtt/train/dmd.py"], "distill", "distill"),
    "hpo": _r(["model", "train_data", "teacher", "hpo"], TEACHER_CODE + ["pvtt/hpo.py", "pvtt/params.py"], "hpo", "hpo"),
    "engine": _r(["train_data", "engine"], MODEL_CODE + ["pvtt/engine.py"], "engine", "engine"),
    "eval": _r(["train_data", "eval"], MODEL_CODE + ["pvtt/evaluation.py", "pvtt/report.py", "pvtt/media.py",
                                             "pvtt/metrics.py", "pvtt/engine.py", "pvtt/train/periodic_eval.py",
                                             "pvtt/quality.py", "pvtt/models/i3d.py"], "eval", "eval"),
}

DATASET_RULES = ["sample", "ingest", "shots", "clips", "products", "index", "masks", "maskqc", "backgrounds",
                 "pairs", "synth", "filter", "review", "pack"]


@dataclass(frozen=True)
class Milestone:
    rules: tuple[str, ...]
    out: str               # relative to paths.artifacts
    upstream: tuple[str, ...] = ()


MILESTONES: dict[str, Milestone] = {
    "dataset": Milestone(tuple(DATASET_RULES), "dataset"),
    "latents": Milestone(("latents",), "latents", ("dataset",)),
    "teacher_phase1": Milestone(("teacher_phase1",), "teacher_phase1", ("dataset", "latents")),
    "teacher_phase2": Milestone(("teacher_phase2",), "teacher_phase2", ("dataset", "latents", "teacher_phase1")),
    "teacher": Milestone(("teacher",), "teacher", ("dataset", "latents", "teacher_phase2")),
    "student_16": Milestone(("student_16",), "student_16", ("latents", "teacher")),
    "student_8": Milestone(("student_8",), "student_8", ("latents", "teacher", "student_16")),
    "student_4": Milestone(("student_4",), "student_4", ("latents", "teacher", "student_8")),
    "engine": Milestone(("engine",), "engine", ("dataset", "student_4")),
    "eval": Milestone(("eval",), "eval", ("dataset", "teacher_phase1", "teacher_phase2", "teacher", "student_16",
                                          "student_8", "student_4", "engine")),
}


def rule_params(config: dict, rule: str) -> dict:
    """The params subtree a rule reads, nested as in params.yaml (e.g. {"distill": {"common": ...}})."""
    out: dict[str, Any] = {}
    for key in RULES[rule].params:
        parts = key.split(".")
        cur = out
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = get_key(config, key)
    return out


def rule_params_json(config: dict, rule: str) -> str:
    return json.dumps(rule_params(config, rule), sort_keys=True, separators=(",", ":"))


def dataset_params_json(config: dict) -> str:
    """{rule: the params it reads} of every dataset rule: what pack records in the dataset index."""
    return json.dumps({r: rule_params(config, r) for r in DATASET_RULES}, sort_keys=True, separators=(",", ":"))


@dataclass
class Inputs:
    """Raw inputs known at parse time: id -> the manifest that describes it."""

    videos: dict[str, str] = field(default_factory=dict)
    products: dict[str, str] = field(default_factory=dict)
    video_files: dict[str, str] = field(default_factory=dict)    # external files that exist (tracked as inputs)
    product_files: dict[str, list[str]] = field(default_factory=dict)


def read_manifest(path: str | Path) -> dict:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"data.manifest: '{p}' does not exist")
    text = p.read_text(encoding="utf-8")
    data = yaml.safe_load(text) if p.suffix in (".yaml", ".yml") else json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("videos", []), list):
        raise ValueError(f"data.manifest: '{p}' must hold lists 'videos' and 'products'")
    return data


def list_inputs(config: dict) -> Inputs:
    from .sample import sample_ids

    work = config["paths"]["work"]
    inputs = Inputs()
    if config["data"]["source"] == "sample":
        ids = sample_ids(config["sample"])
        manifest = f"{work}/sample/manifest.json"
        inputs.videos = {v: manifest for v in ids["videos"]}
        inputs.products = {p: manifest for p in ids["products"]}
    extra = config["data"].get("manifest")
    if extra:
        data = read_manifest(extra)
        base = Path(extra).parent
        for v in data.get("videos", []):
            vid = str(v["id"])
            if vid in inputs.videos:
                raise ValueError(f"data.manifest: video id '{vid}' is used twice")
            inputs.videos[vid] = str(extra)
            f = base / v["path"] if not Path(v["path"]).is_absolute() else Path(v["path"])
            if f.exists():
                inputs.video_files[vid] = str(f)
        for pr in data.get("products", []):
            pid = str(pr["id"])
            if pid in inputs.products:
                raise ValueError(f"data.manifest: product id '{pid}' is used twice")
            inputs.products[pid] = str(extra)
            files = [base / vw["path"] for vw in pr.get("views", [])]
            inputs.product_files[pid] = [str(f) for f in files if f.exists()]
    if not inputs.videos:
        raise ValueError("data: no input videos (data.source is not 'sample' and data.manifest lists none)")
    return inputs


def num_shards(config: dict, n_videos: int) -> int:
    from .pairs import num_shards as pairs_num_shards

    return pairs_num_shards(config["pairs"], n_videos)


def job_count_formula(n_videos: int, n_products: int, n_shards: int, sample: bool) -> int:
    """Jobs of a full build: per video 6 (ingest, shots, clips, masks, maskqc, backgrounds), per
    product 1, per shard 2 (synth, filter), plus fixed ones (index, pairs, review, pack, latents,
    3 teacher phases, 3 students, engine, eval, all: 14, and sample when generated)."""
    return 6 * n_videos + n_products + 2 * n_shards + 14 + (1 if sample else 0)


def pulled_artifact(config: dict, milestone: str, work_marker: str) -> bool:
    """True when a milestone's artifact is here but the intermediates it is built from are not:
    it came from `dvc pull`/`dvc checkout`, not from a build in this checkout."""
    art = Path(config["paths"]["artifacts"]) / MILESTONES[milestone].out
    return (art / "manifest.json").exists() and not Path(work_marker).exists()
