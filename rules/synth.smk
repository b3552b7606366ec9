# Kept clips x other products -> sharded candidate pairs -> synthesised ground truth (per shard).


rule pairs:
    """Pairs are assigned to a fixed number of shards computed from params: the DAG never grows with pairs."""
    input:
        index=f"{W}/index.sqlite",
        maskqc=expand(f"{W}/maskqc/{{video}}", video=VIDEOS),
        backgrounds=expand(f"{W}/backgrounds/{{video}}", video=VIDEOS),
        code=CODE("pairs"),
    output:
        expand(f"{W}/pairs/shard-{{shard}}.json", shard=SHARDS),
        summary=f"{W}/pairs/summary.json",
    params:
        p=P("pairs"),
        videos=VIDEOS,
        n=N_SHARDS,
    log:
        f"{W}/logs/pairs.log",
    resources:
        **RES("default"),
    shell:
        "{PY} scripts/pairs.py --params {params.p:q} --work {W} --videos {params.videos} --num-shards {params.n} --out {W}/pairs > {log} 2>&1"


rule synth:
    input:
        pairs=f"{W}/pairs/shard-{{shard}}.json",
        code=CODE("synth"),
    output:
        directory(f"{W}/synth/shard-{{shard}}"),
    params:
        p=P("synth"),
    log:
        f"{W}/logs/synth/{{shard}}.log",
    threads: RES("models")["cpus_per_task"]
    resources:
        **RES("models"),  # the real backends run networks (GPU at scale: resources.models)
    shell:
        "{PY} scripts/synth.py --params {params.p:q} --work {W} --pairs {input.pairs} --out {output} > {log} 2>&1"
