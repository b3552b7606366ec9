# Raw inputs -> shots -> standard clips (one job per batch of videos: pvtt.data.videos_per_job);
# products -> RGBA; everything -> SQLite index.


rule sample:
    """The embedded sample: procedural showcase videos, product views, ground truth."""
    input:
        code=CODE("sample"),
    output:
        directory(f"{W}/sample"),
    log:
        f"{W}/logs/sample.log",
    conda:
        ENV
    resources:
        **RES("default"),
    params:
        p=P("sample"),
    shell:
        "python scripts/sample.py --params {params.p:q} --out {output} > {log} 2>&1"


rule ingest:
    """Validate a batch of raw videos and copy them in; a bad file is recorded as rejected, not fatal."""
    input:
        src=raw_source,
        code=CODE("ingest"),
    output:
        directory(f"{W}/raw/{{vbatch}}"),
    log:
        f"{W}/logs/ingest/{{vbatch}}.log",
    conda:
        ENV
    resources:
        **RES("default"),
    params:
        p=P("ingest"),
        manifest=batch_manifests,
        videos=batch_videos,
    shell:
        "python scripts/ingest.py --params {params.p:q} --manifest {params.manifest} --videos {params.videos} --out {output} > {log} 2>&1"


rule shots:
    input:
        raw=f"{W}/raw/{{vbatch}}",
        code=CODE("shots"),
    output:
        directory(f"{W}/shots/{{vbatch}}"),
    log:
        f"{W}/logs/shots/{{vbatch}}.log",
    conda:
        ENV
    threads: RES("default")["cpus_per_task"]  # decoder/filter threads; x264 keeps video.threads (bytes)
    resources:
        **RES("default"),
    params:
        p=P("shots"),
        videos=batch_videos,
    shell:
        "python scripts/shots.py --params {params.p:q} --raw {input.raw} --videos {params.videos} --out {output} --threads {threads} > {log} 2>&1"


rule clips:
    input:
        raw=f"{W}/raw/{{vbatch}}",
        shots=f"{W}/shots/{{vbatch}}",
        code=CODE("clips"),
    output:
        directory(f"{W}/clips/{{vbatch}}"),
    log:
        f"{W}/logs/clips/{{vbatch}}.log",
    conda:
        ENV
    threads: RES("default")["cpus_per_task"]  # decoder/filter threads; x264 keeps video.threads (bytes)
    resources:
        **RES("default"),
    params:
        p=P("clips"),
        videos=batch_videos,
    shell:
        "python scripts/clips.py --params {params.p:q} --raw {input.raw} --shots {input.shots} --videos {params.videos} --out {output} --threads {threads} > {log} 2>&1"


rule products:
    """Product views -> RGBA cut-outs (white-background matting on the sample)."""
    input:
        src=product_source,
        code=CODE("products"),
    output:
        directory(f"{W}/products/{{product}}"),
    log:
        f"{W}/logs/products/{{product}}.log",
    conda:
        ENV
    resources:
        **RES("default"),
    params:
        p=P("products"),
        manifest=lambda wc: INPUTS.products[wc.product],
    shell:
        "python scripts/products.py --params {params.p:q} --manifest {params.manifest} --product-id {wildcards.product} --out {output} > {log} 2>&1"


rule index:
    """All metadata and rejects so far -> one SQLite index."""
    input:
        raw=expand(f"{W}/raw/{{vbatch}}", vbatch=VBATCH_IDS),
        shots=expand(f"{W}/shots/{{vbatch}}", vbatch=VBATCH_IDS),
        clips=expand(f"{W}/clips/{{vbatch}}", vbatch=VBATCH_IDS),
        products=expand(f"{W}/products/{{product}}", product=PRODUCTS),
        code=CODE("index"),
    output:
        f"{W}/index.sqlite",
    log:
        f"{W}/logs/index.log",
    conda:
        ENV
    resources:
        **RES("default"),
    params:
        work=WORK,
        p=P("index"),
        videos=VIDEOS,
        products=PRODUCTS,
    shell:
        "python scripts/index.py --params {params.p:q} --work {params.work} --videos {params.videos} --products {params.products} --out {output} > {log} 2>&1"
