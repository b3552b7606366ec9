# Kept clips x other products -> sharded candidate pairs -> synthesised ground truth (per shard).


rule pairs:
    """Pairs are assigned to a fixed number of shards computed from params: the DAG never grows with pairs."""
    input:
        index=f"{W}/index.sqlite",
        maskqc=expand(f"{W}/maskqc/{{vbatch}}", vbatch=VBATCH_IDS),
        backgrounds=expand(f"{W}/backgrounds/{{vbatch}}", vbatch=VBATCH_IDS),
        code=CODE("pairs"),
    output:
        expand(f"{W}/pairs/shard-{{shard}}.json", shard=SHARDS),
        summary=f"{W}/pairs/summary.json",
    log:
        f"{W}/logs/pairs.log",
    conda:
        ENV
    resources:
        **RES("default"),
    params:
        work=WORK,
        p=P("pairs"),
        videos=VIDEOS,
        n=N_SHARDS,
    shell:
        "python scripts/pairs.py --params {params.p:q} --work {params.work} --videos {params.videos} --num-shards {params.n} --out {params.work}/pairs > {log} 2>&1"


rule synth:
    input:
        pairs=f"{W}/pairs/shard-{{shard}}.json",
        code=CODE("synth"),
    output:
        directory(f"{W}/synth/shard-{{shard}}"),
    log:
        f"{W}/logs/synth/{{shard}}.log",
    conda:
        ENV
    threads: RES("models")["cpus_per_task"]
    resources:
        **RES("models"),  # the real backends run networks (GPU at scale: resources.models)
    params:
        work=WORK,
        p=P("synth"),
    shell:
        "python scripts/synth.py --params {params.p:q} --work {params.work} --pairs {input.pairs} --out {output} > {log} 2>&1"
