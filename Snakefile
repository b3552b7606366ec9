# PVTT build: raw videos -> dataset -> teacher -> students -> engine -> evaluation.
# Rules are thin: inputs, outputs, params, resources, log; each calls one scripts/<stage>.py.
# Which params and code each rule reads is defined once, in pvtt/workflow.py (dvc.yaml too).
import re
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)
from pvtt import params as pvtt_params
from pvtt import workflow as wf
from pvtt.phases import phase1_spec

configfile: "params.yaml"

pvtt_params.validate(config)

PY = sys.executable
W = config["paths"]["work"]
A = config["paths"]["artifacts"]
INPUTS = wf.list_inputs(config)
VIDEOS = sorted(INPUTS.videos)
PRODUCTS = sorted(INPUTS.products)
N_SHARDS = wf.num_shards(config, len(VIDEOS))
SHARDS = [f"{i:04d}" for i in range(N_SHARDS)]
VERDICTS = config["filter"]["l3"]["verdicts"]
# SLURM partition for every job; "" leaves it to the profile's default-resources or the cluster default.
PARTITION = config["resources"].get("partition", "")
PART = {"slurm_partition": PARTITION} if PARTITION else {}


def LITERAL(s):
    """A params string passed as it is: one holding "{name}" (masks.prompt "a {category}.")
    would be read as a wildcard, so it goes through a function, which Snakemake does not expand."""
    return (lambda wildcards: s) if re.search(r"\{\s*\w+\s*\}", s) else s


def P(rule):
    """The params a rule reads, as one JSON string (Snakemake reruns the rule when it changes)."""
    return LITERAL(wf.rule_params_json(config, rule))


def CODE(rule):
    """The library code a rule runs: inputs, so a code change reruns the rule."""
    return wf.RULES[rule].code_files()


RESOURCE_FALLBACK = {"mem_mb": 2000, "runtime": 30, "threads": 1, "gpus": 0}


def RES(group):
    """A rule group's resources from params `resources:` (group over `default` over fallback).

    GPUs go out as `gpu`, the name the SLURM executor turns into `--gpus`; the partition
    only when set, so the profile's default-resources can supply it otherwise.
    """
    res = config["resources"]
    r = {**RESOURCE_FALLBACK, **res.get("default", {}), **res.get(group, {})}
    out = {"mem_mb": r["mem_mb"], "runtime": r["runtime"], "cpus_per_task": r["threads"], "gpu": r["gpus"]}
    return {**out, **PART}


# Teacher phase 1 has its own latent cache (latents/phase1) when it trains another model or resolution.
PHASE1_OWN_LATENTS = phase1_spec(config) is not None

# Training rules start one process per GPU of their allocation (one on CPU) with torchrun,
# inside the job: `--standalone` picks a free rendezvous port, so concurrent jobs on a node coexist.
TORCHRUN = ("{PY} -m torch.distributed.run --standalone"
            " --nproc_per_node $(( {resources.gpu} > 1 ? {resources.gpu} : 1 ))")


wildcard_constraints:
    video="[A-Za-z0-9_-]+",
    product="[A-Za-z0-9_-]+",
    shard="[0-9]{4}",


rule all:
    input:
        f"{A}/dataset",
        f"{A}/latents",
        f"{A}/teacher_phase1",
        f"{A}/teacher_phase2",
        f"{A}/teacher",
        f"{A}/student_16",
        f"{A}/student_8",
        f"{A}/student_4",
        f"{A}/engine",
        f"{A}/eval",
    default_target: True


onsuccess:
    if Path(A, "eval", "report.html").exists():
        print(f"PVTT build complete. Report: {Path(A, 'eval', 'report.html').resolve()}")


include: "rules/data.smk"
include: "rules/segment.smk"
include: "rules/synth.smk"
include: "rules/filter.smk"
include: "rules/pack.smk"
include: "rules/latents.smk"
include: "rules/teacher.smk"
include: "rules/distill.smk"
include: "rules/engine.smk"
include: "rules/eval.smk"
include: "rules/hpo.smk"
