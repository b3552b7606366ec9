"""PVTT's part of the DAG: its rules, milestones and raw inputs, defined once.

- ``RULES``: for every rule, the params keys it reads (in the ``pvtt`` namespace, or shared)
  and its entry point; the code it runs is the import closure of that script
  (``genbuild.workflow``). The Snakefile, dvc.yaml and the checkpoints all derive from it.
- ``MILESTONES``: the DVC stages (unprefixed for PVTT), the rules they cover, the artifact
  they version and the teacher phases' DVCLive metrics and plots.
- input listing: the ids of raw videos and products, known at parse time (from the sample
  params, or from the external manifest), so the DAG never needs a checkpoint.

Functions here take the pipeline's view of params (``genbuild.workflow.namespace``: the
``pvtt`` keys with the shared ones merged in). No torch here: the Snakefile imports it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from genbuild.batching import num_batches
from genbuild.params import ParamsError
from genbuild.workflow import Milestone, Pipeline, Rule, rule_params
from pvtt.models.components import stand_in_error
from pvtt.train.phases import STUDENT_INIT, STUDENTS, TEACHER_PHASES

NAME = "pvtt"


def _r(params, script, smk):
    return Rule(tuple(params), script, smk)


DISTILL = ["distill.common", "distill.gate", "eval.teacher_steps", "eval.cfg_scale"]
# The encoder settings of the stages that write video (not all of ``video``: its ``timeouts`` bound
# processes without changing results, and reach the jobs through the environment, rules/common.smk).
ENCODER = ["video.crf", "video.preset", "video.threads"]
RULES: dict[str, Rule] = {
    "sample": _r(["seed", "sample", *ENCODER], "sample", "data"),
    "ingest": _r(["ingest", "data.videos_per_job"], "ingest", "data"),
    "shots": _r(["shots", "data.videos_per_job"], "shots", "data"),
    "clips": _r(["clips", *ENCODER, "data.videos_per_job"], "clips", "data"),
    "products": _r(["products", "ingest"], "products", "data"),
    "index": _r(["data.videos_per_job"], "index", "data"),
    "masks": _r(["masks", "data.videos_per_job"], "masks", "segment"),
    "maskqc": _r(["maskqc", "data.videos_per_job"], "maskqc", "segment"),
    "backgrounds": _r(["backgrounds", *ENCODER, "data.videos_per_job"], "backgrounds", "segment"),
    "pairs": _r(["seed", "pairs", "data.videos_per_job"], "pairs", "synth"),
    "synth": _r(["seed", "synth", *ENCODER], "synth", "synth"),
    "filter": _r(["filter.l1", "filter.l2", "filter.l3.vlm"], "filter", "filter"),
    "review": _r(["seed", "filter.l3"], "review", "filter"),
    "pack": _r(["seed", "pack"], "pack", "pack"),
    "latents": _r(["model", "train_data", "teacher_phases.phase1.model", "teacher_phases.phase1.train_data"],
                  "latents", "latents"),
    **{rule: _r(["model", "train_data", "teacher", f"teacher_phases.{phase}"], "teacher", "teacher")
       for phase, rule in TEACHER_PHASES},
    **{s: _r([*DISTILL, f"distill.{s}"], "distill", "distill") for s in STUDENTS},
    "hpo": _r(["model", "train_data", "teacher", "hpo"], "hpo", "hpo"),
    "engine": _r(["train_data", "engine"], "engine", "engine"),
    "eval": _r(["train_data", "eval"], "eval", "eval"),
}

DATASET_RULES = ["sample", "ingest", "shots", "clips", "products", "index", "masks", "maskqc", "backgrounds",
                 "pairs", "synth", "filter", "review", "pack"]


def _teacher_milestones() -> dict[str, Milestone]:
    """The chained phases: each reads the previous one; each logs DVCLive series in its artifact."""
    out, prev = {}, ()
    for _, rule in TEACHER_PHASES:
        out[rule] = Milestone((rule,), rule, ("dataset", "latents", *prev), metrics=("dvclive/metrics.json",),
                              plots=("dvclive/plots/metrics", "dvclive/plots/images"))
        prev = (rule,)
    return out


TEACHER = TEACHER_PHASES[-1][1]
MILESTONES: dict[str, Milestone] = {
    "dataset": Milestone(tuple(DATASET_RULES), "dataset"),
    "latents": Milestone(("latents",), "latents", ("dataset",)),
    **_teacher_milestones(),
    **{s: Milestone((s,), s, ("latents", TEACHER, *([init] if init != "teacher" else [])))
       for s, init in STUDENT_INIT.items()},
    "engine": Milestone(("engine",), "engine", ("dataset", "student_4")),
    "eval": Milestone(("eval",), "eval", ("dataset", *(r for _, r in TEACHER_PHASES), *STUDENTS, "engine"),
                      metrics=("metrics.json",)),
}


def check_params(ns: dict, config: dict) -> None:
    """Relations between PVTT keys that the schema cannot express."""
    cl = ns["clips"]
    if cl["min_seconds"] > cl["max_seconds"]:
        raise ParamsError(f"params: pvtt.clips.min_seconds ({cl['min_seconds']}) exceeds "
                          f"pvtt.clips.max_seconds ({cl['max_seconds']})")
    td = ns["train_data"]
    for k in ("width", "height"):
        if td[k] % 8:
            raise ParamsError(f"params: pvtt.train_data.{k}: {td[k]} is not a multiple of 8 (codec x patch size)")
    lo, hi = ns["sample"]["cuts_per_video"]
    if lo > hi:
        raise ParamsError(f"params: pvtt.sample.cuts_per_video: [{lo}, {hi}] is not a range")
    stand_ins = stand_in_error(ns)  # real base weights never train on a weight-free stand-in unless params say so
    if stand_ins:
        raise ParamsError(stand_ins)
    check_stage_params(ns)


# Each data stage's own check of its section (module, function, section): stricter in places than
# the schema (e.g. masks.min_area_frac < 1), so it runs at start-up too. Imported lazily: no torch.
STAGE_CHECKS = (("ingest", "validate_params", "ingest"), ("shots", "validate_params", "shots"),
                ("products", "validate_params", "products"), ("masks", "validate_params", "masks"),
                ("maskqc", "validate_params", "maskqc"), ("pairs", "validate_pairs_params", None))


def check_stage_params(ns: dict) -> None:
    """Run the stages' own params checks now, so that a value the schema lets through but a stage
    refuses stops the build at start-up naming the key, not in a job hours later."""
    import importlib

    for module, fn, section in STAGE_CHECKS:
        check = getattr(importlib.import_module(f"pvtt.data.{module}"), fn)
        try:
            check({section: ns.get(section)} if section else ns.get("pairs"))
        except ValueError as e:
            msg = str(e)
            named = msg.replace("params key '", f"params key '{NAME}.", 1)
            raise ParamsError(named if named != msg else f"params ({NAME}.{section or 'pairs'}): {msg}") from None


def _extra_deps(config: dict, milestone: str) -> list[str]:
    """The dataset also depends on the external input manifest, when there is one."""
    manifest = config[NAME]["data"].get("manifest")
    return [manifest] if milestone == "dataset" and manifest else []


PIPELINE = Pipeline(
    name=NAME, rules=RULES, milestones=MILESTONES, stage_prefix="", check_params=check_params,
    extra_deps=_extra_deps,
    releases={"dataset": ("dataset",), "teacher": (TEACHER,), "student": STUDENTS,
              "engine": ("engine",), "eval": ("eval",)},
)


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


# What a video or product id may be: it names directories (work/<stage>/<batch>/<video>, products/<id>).
ID_PATTERN = "[A-Za-z0-9_-]+"
_ID_RE = re.compile(f"^{ID_PATTERN}$")


def read_manifest(path: str | Path) -> dict:
    """The external manifest, its shape and ids checked: an error names the manifest and the entry."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"data.manifest: '{p}' does not exist")
    text = p.read_text(encoding="utf-8")
    data = yaml.safe_load(text) if p.suffix in (".yaml", ".yml") else json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("videos") or [], list) \
            or not isinstance(data.get("products") or [], list):
        raise ValueError(f"data.manifest: '{p}' must hold lists 'videos' and 'products'")
    for kind in ("videos", "products"):
        for i, item in enumerate(data.get(kind) or []):
            if not isinstance(item, dict):
                raise ValueError(f"data.manifest: '{p}' {kind}[{i}] is not a mapping")
            iid = item.get("id")
            if iid is None or isinstance(iid, (bool, list, dict)) or not _ID_RE.match(str(iid)):
                raise ValueError(f"data.manifest: '{p}' {kind}[{i}] id {iid!r} is not a valid id: an id names "
                                 f"the job's directories and must match {ID_PATTERN} (letters, digits, '_', '-')")
    return data


def _media_file(base: Path, value) -> Path | None:
    """The local file a manifest path names, when it is one that exists (not a URL, not malformed)."""
    if not isinstance(value, str) or not value or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", value):
        return None
    f = Path(value) if Path(value).is_absolute() else base / value
    return f if f.exists() else None


def list_inputs(config: dict) -> Inputs:
    """Video and product ids -> their manifest. A manifest error that makes a job impossible (an id the
    wildcards cannot match, a duplicate id) stops here; a malformed view or path does not: the stage
    that reads it rejects that entry (so parsing the DAG never fails on one bad row)."""
    from pvtt.data.sample import sample_ids

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
        for v in data.get("videos") or []:
            vid = str(v["id"])
            if vid in inputs.videos:
                raise ValueError(f"data.manifest: video id '{vid}' is used twice")
            inputs.videos[vid] = str(extra)
            f = _media_file(base, v.get("path"))
            if f is not None:
                inputs.video_files[vid] = str(f)
        for pr in data.get("products") or []:
            pid = str(pr["id"])
            if pid in inputs.products:
                raise ValueError(f"data.manifest: product id '{pid}' is used twice")
            inputs.products[pid] = str(extra)
            views = pr.get("views") if isinstance(pr.get("views"), list) else []
            files = [_media_file(base, vw.get("path")) for vw in views if isinstance(vw, dict)]
            inputs.product_files[pid] = [str(f) for f in files if f is not None]
    if not inputs.videos:
        raise ValueError("data: no input videos (data.source is not 'sample' and data.manifest lists none)")
    return inputs


def num_shards(config: dict, n_videos: int) -> int:
    from pvtt.data.pairs import num_shards as pairs_num_shards

    return pairs_num_shards(config["pairs"], n_videos)


def job_count_formula(n_videos: int, n_products: int, n_shards: int, sample: bool, videos_per_job: int = 1) -> int:
    """Jobs of a full build: per batch of ``videos_per_job`` videos 6 (ingest, shots, clips, masks,
    maskqc, backgrounds), per product 1, per shard 2 (synth, filter), plus fixed ones (index,
    pairs, review, pack, latents, 3 teacher phases, 4 students, engine, eval, all: 15, and sample
    when generated)."""
    return 6 * num_batches(n_videos, videos_per_job) + n_products + 2 * n_shards + 15 + (1 if sample else 0)


def pulled_artifact(config: dict, milestone: str, work_marker: str) -> bool:
    """True when a milestone's artifact is here but the intermediates it is built from are not:
    it came from `dvc pull`/`dvc checkout`, not from a build in this checkout."""
    art = Path(config["paths"]["artifacts"]) / MILESTONES[milestone].out
    return (art / "manifest.json").exists() and not Path(work_marker).exists()
