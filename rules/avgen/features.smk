# Dataset shards -> CLIP (frames, text) + CLAP (audio, text) embeddings and SD-VAE latents, per batch.


rule avgen_features:
    """The embeddings and latents of one batch's shards (every split), one .npz per shard."""
    input:
        dataset=f"{A}/avgen_dataset",
        code=CODE("avgen_features"),
    output:
        directory(f"{AV_W}/features/{{avbatch}}"),
    log:
        f"{W}/logs/avgen/features/{{avbatch}}.log",
    conda:
        ENV
    threads: RES("models")["cpus_per_task"]
    resources:
        **RES("models"),
    params:
        p=P("avgen_features"),
    shell:
        "python scripts/avgen_features.py --params {params.p:q} --dataset {input.dataset} --batch {wildcards.avbatch} --out {output} --threads {threads} > {log} 2>&1"


rule avgen_features_index:
    """Every batch's features in one artifact, with the frozen VAE's identity: the avgen_features milestone."""
    input:
        unpack(av_features_work_inputs),
        code=CODE("avgen_features_index"),
    output:
        directory(f"{A}/avgen_features"),
    log:
        f"{W}/logs/avgen/features_index.log",
    conda:
        ENV
    resources:
        **RES("default"),
    params:
        p=P("avgen_features_index"),
        batches=expand(f"{AV_W}/features/{{avbatch}}", avbatch=AV_BATCHES),
    shell:
        "python scripts/avgen_features_index.py --params {params.p:q} --batches {params.batches} --out {output} > {log} 2>&1"
