# Kept pairs -> WebDataset shards + dataset card: the `dataset` milestone (DVC stage `dataset`).


rule pack:
    input:
        unpack(pack_work_inputs),
        code=CODE("pack"),
    output:
        directory(f"{A}/dataset"),
    log:
        f"{W}/logs/pack.log",
    conda:
        ENV
    resources:
        **RES("default"),
    params:
        work=WORK,
        p=P("pack"),
        synth=expand(f"{W}/synth/shard-{{shard}}", shard=SHARDS),
        filters=expand(f"{W}/filter/shard-{{shard}}", shard=SHARDS),
        # what every dataset rule read (all already params of the DVC stage `dataset`), for the dataset index
        stages=LITERAL(pvtt.dataset_params_json(config)),
    shell:
        "python scripts/pack.py --params {params.p:q} --work {params.work} --pairs-dir {params.work}/pairs --synth {params.synth} --filter {params.filters} --review {params.work}/review --stage-params {params.stages:q} --out {output} > {log} 2>&1"
