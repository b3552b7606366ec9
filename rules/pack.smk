# Kept pairs -> WebDataset shards + dataset card: the `dataset` milestone (DVC stage `dataset`).


rule pack:
    input:
        summary=f"{W}/pairs/summary.json",
        synth=expand(f"{W}/synth/shard-{{shard}}", shard=SHARDS),
        filters=expand(f"{W}/filter/shard-{{shard}}", shard=SHARDS),
        review=f"{W}/review",
        index=f"{W}/index.sqlite",
        code=CODE("pack"),
    output:
        directory(f"{A}/dataset"),
    params:
        p=P("pack"),
    log:
        f"{W}/logs/pack.log",
    resources:
        mem_mb=R("default", "mem_mb", 2000),
        runtime=R("default", "runtime", 30),
    shell:
        "{PY} scripts/pack.py --params {params.p:q} --work {W} --pairs-dir {W}/pairs --synth {input.synth} --filter {input.filters} --review {input.review} --out {output} > {log} 2>&1"
