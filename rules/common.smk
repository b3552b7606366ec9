# Helpers shared by every pipeline's rules: params passing, code inputs, resources, launchers.
# The workflow tables they read are the pipelines' (genbuild.workflow: pvtt/pipeline.py, ...).
import json
import os
import re
import sys
from pathlib import Path

from genbuild import params as build_params
from genbuild import workflow as wf

build_params.validate(config)

# Jobs call `python`: the interpreter that runs Snakemake (its venv) comes first on their PATH,
# unless a rule's conda env (--software-deployment-method conda) puts its own in front.
os.environ.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
# Wall-clock limits of every ffmpeg/ffprobe the jobs run (genbuild.stage applies them), handed over
# in the environment, not in params: a limit does not change a result, so changing one rebuilds nothing.
os.environ.update(GENBUILD_VIDEO_TIMEOUTS=json.dumps(config["video"].get("timeouts") or {}))
W = config["paths"]["work"]
A = config["paths"]["artifacts"]
ENV = "../../envs/build.conda.yaml"  # each rule's software (relative to rules/<pipeline>/)
# SLURM partition for every job; "" leaves it to the profile's default-resources or the cluster default.
PARTITION = config["resources"].get("partition", "")
PART = {"slurm_partition": PARTITION} if PARTITION else {}


def WORK(wildcards):
    """The work dir, for scripts that read several intermediates by their layout (--work).

    A function, not the string: params stay plain strings for the output cache, and
    `snakemake --lint` does not mistake the directory for a hard-coded input path.
    """
    return W


def LITERAL(s):
    """A params string passed as it is.

    One holding "{name}" (masks.prompt "a {category}.") would be read as a wildcard,
    so it goes through a function, which Snakemake does not expand.
    """
    return (lambda wildcards: s) if re.search(r"\{\s*\w+\s*\}", s) else s


def P(name):
    """The params one rule reads, as one JSON string (Snakemake reruns it when they change)."""
    return LITERAL(wf.rule_params_json(config, name))


def CODE(name):
    """The library code a stage runs (its script's import closure), as inputs: a code change reruns it."""
    return wf.find_rule(name)[1].code_files()


RESOURCE_FALLBACK = {"mem_mb": 2000, "runtime": 30, "threads": 1, "gpus": 0}


def RES(group):
    """The resources of a group of rules, from params resources.<group> over .default over fallback.

    GPUs go out as `gpu`, the name the SLURM executor turns into `--gpus`; the partition
    only when set, so the profile's default-resources can supply it otherwise.
    """
    res = config["resources"]
    r = {**RESOURCE_FALLBACK, **res.get("default", {}), **res.get(group, {})}
    out = {"mem_mb": r["mem_mb"], "runtime": r["runtime"], "cpus_per_task": r["threads"], "gpu": r["gpus"]}
    return {**out, **PART}


def torchrun(command):
    """A training command under torchrun: one process per GPU of the job's allocation (one on CPU).

    `--standalone` picks a free rendezvous port, so concurrent jobs on a node coexist.
    """
    launch = (
        "python -m torch.distributed.run --standalone --nproc_per_node $(( {resources.gpu} > 1 ? {resources.gpu} : 1 ))"
    )
    return f"{launch} {command}"
