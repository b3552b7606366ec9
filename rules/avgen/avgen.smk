# AVGen-DiT: clips with sound -> dataset -> features -> stage1/2/3 -> INT8 -> evaluation.
# Its rules, params keys and milestones: avgen/pipeline.py; its params: the `avgen:` namespace.
# Clips are grouped `avgen.data.clips_per_job` per job ({avbatch}: b0000, b0001, ...).
from avgen import pipeline as avgen

AV = wf.namespace(config, "avgen")  # AVGen's params with the shared keys merged in
AV_W = f"{W}/avgen"
AV_BATCHES = avgen.batches(AV)
AV_MANIFEST = avgen.manifest_path(AV)
AVGEN_TARGETS = [f"{A}/{ms.out}" for ms in avgen.MILESTONES.values()]


# Input functions of AVGen rules (kept apart from the rules, as `snakemake --lint` asks).
def av_manifest_inputs(wildcards):
    """The ingest manifest: the generated sample (its directory, a rule output) or the external CSV."""
    return [f"{AV_W}/sample"] if AV["data"]["source"] == "sample" else [AV_MANIFEST]


def av_pack_work_inputs(wildcards):
    """The intermediates the dataset is packed from, unless the dataset came from `dvc pull`."""
    if avgen.pulled_artifact(AV, "dataset", f"{AV_W}/format"):
        return {}
    return {
        "ingest": expand(f"{AV_W}/raw/{{avbatch}}", avbatch=AV_BATCHES),
        "filter": expand(f"{AV_W}/filter/{{avbatch}}", avbatch=AV_BATCHES),
        "format": expand(f"{AV_W}/format/{{avbatch}}", avbatch=AV_BATCHES),
    }


def av_features_work_inputs(wildcards):
    """The per-batch features the index collects, unless the features came from `dvc pull`."""
    if avgen.pulled_artifact(AV, "features", f"{AV_W}/features"):
        return {}
    return {"batches": expand(f"{AV_W}/features/{{avbatch}}", avbatch=AV_BATCHES)}


wildcard_constraints:
    avbatch="b[0-9][0-9][0-9][0-9]+",
    avstage="stage[123]",


include: "data.smk"
include: "features.smk"
include: "train.smk"
include: "deploy.smk"
include: "eval.smk"
