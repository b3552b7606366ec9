# Kept pairs -> WebDataset shards + dataset card: the `dataset` milestone (DVC stage `dataset`).


def pack_work_inputs(wildcards):
    """The intermediates pack reads, unless the dataset was pulled from DVC rather than built here.

    After `dvc pull` on a fresh clone the artifact exists but work/ does not; declaring work/
    then would make Snakemake rebuild the whole dataset. When DVC reruns the stage it first
    deletes the artifact, so the full chain comes back.
    """
    if wf.pulled_artifact(config, "dataset", f"{W}/index.sqlite"):
        return {}
    return {
        "summary": f"{W}/pairs/summary.json",
        "synth": expand(f"{W}/synth/shard-{{shard}}", shard=SHARDS),
        "filters": expand(f"{W}/filter/shard-{{shard}}", shard=SHARDS),
        "review": f"{W}/review",
        "index": f"{W}/index.sqlite",
    }


rule pack:
    input:
        unpack(pack_work_inputs),
        code=CODE("pack"),
    output:
        directory(f"{A}/dataset"),
    params:
        p=P("pack"),
        synth=expand(f"{W}/synth/shard-{{shard}}", shard=SHARDS),
        filters=expand(f"{W}/filter/shard-{{shard}}", shard=SHARDS),
        # what every dataset rule read (all already params of the DVC stage `dataset`), for the dataset index
        stages=LITERAL(wf.dataset_params_json(config)),
    log:
        f"{W}/logs/pack.log",
    resources:
        **RES("default"),
    shell:
        "{PY} scripts/pack.py --params {params.p:q} --work {W} --pairs-dir {W}/pairs --synth {params.synth} --filter {params.filters} --review {W}/review --stage-params {params.stages:q} --out {output} > {log} 2>&1"
