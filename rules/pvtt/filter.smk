# Synthesised pairs -> L1/L2 scores and decisions (per shard) -> L3 human-review sheet.


rule filter:
    input:
        pairs=f"{W}/pairs/shard-{{shard}}.json",
        synth=f"{W}/synth/shard-{{shard}}",
        code=CODE("filter"),
    output:
        directory(f"{W}/filter/shard-{{shard}}"),
    log:
        f"{W}/logs/filter/{{shard}}.log",
    conda:
        ENV
    threads: RES("models")["cpus_per_task"]
    resources:
        **RES("models"),  # the real backends run networks (GPU at scale: resources.models)
    params:
        work=WORK,
        p=P("filter"),
    shell:
        "python scripts/filter.py --params {params.p:q} --work {params.work} --pairs {input.pairs} --synth {input.synth} --out {output} > {log} 2>&1"


rule review:
    """L3: a review sheet of a sampled fraction; a committed verdicts CSV is read back."""
    input:
        filters=expand(f"{W}/filter/shard-{{shard}}", shard=SHARDS),
        verdicts=[VERDICTS] if Path(VERDICTS).exists() else [],
        code=CODE("review"),
    output:
        directory(f"{W}/review"),
    log:
        f"{W}/logs/review.log",
    conda:
        ENV
    resources:
        **RES("default"),
    params:
        work=WORK,
        p=P("review"),
        verdicts=VERDICTS,
    shell:
        "python scripts/review.py --params {params.p:q} --work {params.work} --filter {input.filters} --verdicts {params.verdicts} --out {output} > {log} 2>&1"
