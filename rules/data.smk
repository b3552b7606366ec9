# Raw inputs -> shots -> standard clips; products -> RGBA; everything -> SQLite index.


rule sample:
    """The embedded sample: procedural showcase videos, product views, ground truth."""
    input:
        code=CODE("sample"),
    output:
        directory(f"{W}/sample"),
    params:
        p=P("sample"),
    log:
        f"{W}/logs/sample.log",
    resources:
        **RES("default"),
    shell:
        "{PY} scripts/sample.py --params {params.p:q} --out {output} > {log} 2>&1"


def raw_source(wildcards):
    files = [INPUTS.videos[wildcards.video]]
    if INPUTS.videos[wildcards.video].startswith(f"{W}/sample/"):
        files = [f"{W}/sample"]
    return files + ([INPUTS.video_files[wildcards.video]] if wildcards.video in INPUTS.video_files else [])


rule ingest:
    """Validate a raw video and copy it in; a bad file is recorded as rejected, not fatal."""
    input:
        src=raw_source,
        code=CODE("ingest"),
    output:
        directory(f"{W}/raw/{{video}}"),
    params:
        p=P("ingest"),
        manifest=lambda wc: INPUTS.videos[wc.video],
    log:
        f"{W}/logs/ingest/{{video}}.log",
    resources:
        **RES("default"),
    shell:
        "{PY} scripts/ingest.py --params {params.p:q} --manifest {params.manifest} --video-id {wildcards.video} --out {output} > {log} 2>&1"


rule shots:
    input:
        raw=f"{W}/raw/{{video}}",
        code=CODE("shots"),
    output:
        directory(f"{W}/shots/{{video}}"),
    params:
        p=P("shots"),
    log:
        f"{W}/logs/shots/{{video}}.log",
    threads: RES("default")["cpus_per_task"]  # decoder/filter threads; x264 keeps video.threads (bytes)
    resources:
        **RES("default"),
    shell:
        "{PY} scripts/shots.py --params {params.p:q} --raw {input.raw} --out {output} --threads {threads} > {log} 2>&1"


rule clips:
    input:
        raw=f"{W}/raw/{{video}}",
        shots=f"{W}/shots/{{video}}",
        code=CODE("clips"),
    output:
        directory(f"{W}/clips/{{video}}"),
    params:
        p=P("clips"),
    log:
        f"{W}/logs/clips/{{video}}.log",
    threads: RES("default")["cpus_per_task"]  # decoder/filter threads; x264 keeps video.threads (bytes)
    resources:
        **RES("default"),
    shell:
        "{PY} scripts/clips.py --params {params.p:q} --raw {input.raw} --shots {input.shots} --out {output} --threads {threads} > {log} 2>&1"


def product_source(wildcards):
    m = INPUTS.products[wildcards.product]
    if m.startswith(f"{W}/sample/"):
        return [f"{W}/sample"]
    return [m] + INPUTS.product_files.get(wildcards.product, [])


rule products:
    """Product views -> RGBA cut-outs (white-background matting on the sample)."""
    input:
        src=product_source,
        code=CODE("products"),
    output:
        directory(f"{W}/products/{{product}}"),
    params:
        p=P("products"),
        manifest=lambda wc: INPUTS.products[wc.product],
    log:
        f"{W}/logs/products/{{product}}.log",
    resources:
        **RES("default"),
    shell:
        "{PY} scripts/products.py --params {params.p:q} --manifest {params.manifest} --product-id {wildcards.product} --out {output} > {log} 2>&1"


rule index:
    """All metadata and rejects so far -> one SQLite index."""
    input:
        raw=expand(f"{W}/raw/{{video}}", video=VIDEOS),
        shots=expand(f"{W}/shots/{{video}}", video=VIDEOS),
        clips=expand(f"{W}/clips/{{video}}", video=VIDEOS),
        products=expand(f"{W}/products/{{product}}", product=PRODUCTS),
        code=CODE("index"),
    output:
        f"{W}/index.sqlite",
    params:
        p=P("index"),
        videos=VIDEOS,
        products=PRODUCTS,
    log:
        f"{W}/logs/index.log",
    resources:
        **RES("default"),
    shell:
        "{PY} scripts/index.py --params {params.p:q} --work {W} --videos {params.videos} --products {params.products} --out {output} > {log} 2>&1"
