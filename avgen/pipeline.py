"""AVGen-DiT's part of the DAG: its rules, milestones and input batches, defined once.

- ``RULES``: for every rule, the params keys it reads (in the ``avgen`` namespace, or shared) and
  its entry point; every rule name carries the ``avgen_`` prefix (rule names are global in the
  one Snakefile, and PVTT already has ``sample``, ``ingest``, ``filter``, ``pack``, ``eval``).
- ``MILESTONES``: the DVC stages ``avgen_dataset``, ``avgen_features``, ``avgen_stage1..3``,
  ``avgen_int8`` and ``avgen_eval``, each versioning the artifact of the same name.
- input batches: clips are grouped ``data.clips_per_job`` per job (``genbuild.batching``), so the
  per-clip stages (ingest, filter, format, features) have one job per batch; only the number of
  clips is read at parse time, never the clips (19.5M at full scale).

No torch here: the Snakefile imports it.
"""
from __future__ import annotations

from pathlib import Path

from genbuild import batching
from genbuild.params import ParamsError
from genbuild.workflow import Milestone, Pipeline, Rule

NAME = "avgen"
STAGES = ("stage1", "stage2", "stage3")
# The encoder settings of the stages that write video (``video.timeouts`` reach jobs through the environment).
ENCODER = ["video.crf", "video.preset", "video.threads"]


def _r(params, script, smk):
    return Rule(tuple(params), script, smk)


RULES: dict[str, Rule] = {
    "avgen_sample": _r(["seed", "sample", *ENCODER], "avgen_sample", "data"),
    "avgen_ingest": _r(["data", "ingest"], "avgen_ingest", "data"),
    "avgen_filter": _r(["filter"], "avgen_filter", "data"),
    "avgen_format": _r(["seed", "format", "pack", *ENCODER], "avgen_format", "data"),
    "avgen_pack": _r(["pack", "filter", "format"], "avgen_pack", "data"),
    "avgen_features": _r(["format", "features"], "avgen_features", "features"),
    "avgen_features_index": _r(["format", "features"], "avgen_features_index", "features"),
    **{f"avgen_{s}": _r(["model", "train.common", f"train.{s}"], "avgen_train", "train") for s in STAGES},
    "avgen_int8": _r(["int8", "train.common.shift"], "avgen_int8", "deploy"),
    "avgen_eval": _r(["eval", "format", "features", "model", "train.common.shift"], "avgen_eval", "eval"),
}

DATASET_RULES = ("avgen_sample", "avgen_ingest", "avgen_filter", "avgen_format", "avgen_pack")


def _stage_milestones() -> dict[str, Milestone]:
    out, prev = {}, ()
    for s in STAGES:
        out[s] = Milestone((f"avgen_{s}",), f"avgen_{s}", ("features", *prev), metrics=("metrics.json",),
                           plots=("dvclive/plots/metrics",))
        prev = (s,)
    return out


MILESTONES: dict[str, Milestone] = {
    "dataset": Milestone(DATASET_RULES, "avgen_dataset", metrics=("card.json",)),
    "features": Milestone(("avgen_features", "avgen_features_index"), "avgen_features", ("dataset",)),
    **_stage_milestones(),
    "int8": Milestone(("avgen_int8",), "avgen_int8", ("features", "stage3"), metrics=("metrics.json",)),
    "eval": Milestone(("avgen_eval",), "avgen_eval", ("dataset", "features", "stage3", "int8"),
                      metrics=("metrics.json",)),
}


def num_clips(ns: dict) -> int:
    """Clips in the input, known at parse time: the sample's count, or the manifest's rows (its header excluded)."""
    if ns["data"]["source"] == "sample":
        return int(ns["sample"]["n_good"]) + len(ns["sample"]["failures"])
    manifest = ns["data"].get("manifest")
    if not manifest or not Path(manifest).is_file():
        raise ParamsError(f"params: avgen.data.manifest: {manifest!r} is not a file (data.source is 'manifest')")
    return max(0, batching.count_lines(manifest) - 1)


def manifest_path(ns: dict) -> str:
    """The ingest manifest the batches are cut from (the generated sample's, or data.manifest)."""
    if ns["data"]["source"] == "sample":
        return f"{ns['paths']['work']}/avgen/sample/manifest.csv"
    return str(ns["data"]["manifest"])


def batches(ns: dict) -> list[str]:
    return batching.batch_ids(num_clips(ns), int(ns["data"]["clips_per_job"]))


def check_params(ns: dict, config: dict) -> None:
    """Relations between AVGen keys that the schema cannot express; then the stages' own checks."""
    from avgen.data.quality import validate_filter_params

    try:
        validate_filter_params(ns["filter"])
    except ValueError as e:
        raise ParamsError(str(e).replace("params key '", f"params key '{NAME}.", 1)) from None
    fmt = ns["format"]
    if fmt["size"] % 8:
        raise ParamsError(f"params: avgen.format.size: {fmt['size']} is not a multiple of 8 (the VAE's factor)")
    if ns["data"]["source"] == "manifest" and not ns["data"].get("manifest"):
        raise ParamsError("params: avgen.data.manifest must name the ingest manifest when avgen.data.source is 'manifest'")
    stand_in = _stand_in_error(ns)
    if stand_in:
        raise ParamsError(stand_in)


def _stand_in_error(ns: dict) -> str | None:
    """A weight-free stand-in is for the sample: at scale (model.preset other than tiny) params must list it."""
    if ns["model"]["preset"] == "tiny":
        return None
    allowed = set(ns["features"].get("allow_stand_ins") or [])
    used = [f"features.{k}" for k in ("clip", "clap", "vae") if ns["features"][k]["backend"] == "stand_in"]
    used += ["model.vocoder"] if ns["model"]["vocoder"]["backend"] == "stand_in" else []
    refused = [u for u in used if u.split(".")[-1] not in allowed]
    if refused:
        return (f"params: avgen.model.preset {ns['model']['preset']!r} would train on weight-free stand-ins "
                f"({', '.join('avgen.' + r for r in refused)}); point them at local weights under models/, or list "
                f"them in avgen.features.allow_stand_ins to ask for it by name")
    return None


def _extra_deps(config: dict, milestone: str) -> list[str]:
    manifest = config[NAME]["data"].get("manifest")
    return [manifest] if milestone == "dataset" and config[NAME]["data"]["source"] == "manifest" else []


PIPELINE = Pipeline(
    name=NAME, rules=RULES, milestones=MILESTONES, stage_prefix="avgen_", check_params=check_params,
    extra_deps=_extra_deps,
    releases={"dataset": ("dataset",), "features": ("features",), "model": STAGES, "int8": ("int8",),
              "eval": ("eval",)},
)


def pulled_artifact(ns: dict, milestone: str, work_marker: str) -> bool:
    """True when a milestone's artifact is here but its intermediates are not (it came from `dvc pull`)."""
    art = Path(ns["paths"]["artifacts"]) / MILESTONES[milestone].out
    return (art / "manifest.json").exists() and not Path(work_marker).exists()
