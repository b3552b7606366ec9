# PVTT: raw videos -> dataset -> teacher (3 phases) -> students 16/8/4 (+ alt) -> engine -> evaluation.
# Its rules, params keys and milestones: pvtt/pipeline.py; its params: the `pvtt:` namespace.
from pvtt import pipeline as pvtt
from pvtt.data import vbatch
from pvtt.train.phases import STUDENT_INIT, TEACHER_PHASES, phase1_spec

PV = wf.namespace(config, "pvtt")  # PVTT's params with the shared keys merged in
INPUTS = pvtt.list_inputs(PV)
VIDEOS = sorted(INPUTS.videos)
# The per-video stages run per batch of data.videos_per_job videos (sorted ids): jobs grow with batches.
VBATCHES = vbatch.batches(VIDEOS, vbatch.per_job(PV))
VBATCH_IDS = list(VBATCHES)
PRODUCTS = sorted(INPUTS.products)
N_SHARDS = pvtt.num_shards(PV, len(VIDEOS))
SHARDS = [f"{i:04d}" for i in range(N_SHARDS)]
VERDICTS = PV["filter"]["l3"]["verdicts"]
# Teacher phase 1 has its own latent cache (latents/phase1) when it trains another model or resolution.
PHASE1_OWN_LATENTS = phase1_spec(PV) is not None
PVTT_TARGETS = [f"{A}/{ms.out}" for ms in pvtt.MILESTONES.values()]


# Input functions of PVTT rules (kept apart from the rules, as `snakemake --lint` asks).
def batch_videos(wildcards):
    """The videos of a batch (a param: a change of membership reruns the batch)."""
    return VBATCHES[wildcards.vbatch]


def batch_manifests(wildcards):
    """The manifest of each video of a batch, in batch order (one when they share it)."""
    ms = [INPUTS.videos[v] for v in VBATCHES[wildcards.vbatch]]
    return ms[:1] if len(set(ms)) == 1 else ms


def raw_source(wildcards):
    """A batch's raw inputs: the manifests (or the generated sample) and the files that are local."""
    files = []
    for v in VBATCHES[wildcards.vbatch]:
        m = INPUTS.videos[v]
        files.append(f"{W}/sample" if m.startswith(f"{W}/sample/") else m)
        if v in INPUTS.video_files:
            files.append(INPUTS.video_files[v])
    return list(dict.fromkeys(files))


def product_source(wildcards):
    """A product's inputs: its manifest (or the generated sample) and its local view images."""
    m = INPUTS.products[wildcards.product]
    if m.startswith(f"{W}/sample/"):
        return [f"{W}/sample"]
    return [m] + INPUTS.product_files.get(wildcards.product, [])


def pack_work_inputs(wildcards):
    """The intermediates pack reads, unless the dataset was pulled from DVC rather than built here.

    After `dvc pull` on a fresh clone the artifact exists but work/ does not; declaring work/
    then would make Snakemake rebuild the whole dataset. When DVC reruns the stage it first
    deletes the artifact, so the full chain comes back.
    """
    if pvtt.pulled_artifact(PV, "dataset", f"{W}/index.sqlite"):
        return {}
    return {
        "summary": f"{W}/pairs/summary.json",
        "synth": expand(f"{W}/synth/shard-{{shard}}", shard=SHARDS),
        "filters": expand(f"{W}/filter/shard-{{shard}}", shard=SHARDS),
        "review": f"{W}/review",
        "index": f"{W}/index.sqlite",
    }


wildcard_constraints:
    vbatch="b[0-9]+",
    product="[A-Za-z0-9_-]+",
    shard="[0-9]{4}",


include: "data.smk"
include: "segment.smk"
include: "synth.smk"
include: "filter.smk"
include: "pack.smk"
include: "latents.smk"
include: "teacher.smk"
include: "distill.smk"
include: "engine.smk"
include: "eval.smk"
include: "hpo.smk"
