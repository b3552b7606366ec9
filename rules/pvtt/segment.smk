# Clips -> per-frame product masks -> mask QC -> clean backgrounds (one job per batch of videos).


rule masks:
    input:
        clips=f"{W}/clips/{{vbatch}}",
        raw=f"{W}/raw/{{vbatch}}",  # info.json: the product category (prompt of grounded_sam2)
        code=CODE("masks"),
    output:
        directory(f"{W}/masks/{{vbatch}}"),
    log:
        f"{W}/logs/masks/{{vbatch}}.log",
    conda:
        ENV
    threads: RES("models")["cpus_per_task"]
    resources:
        **RES("models"),  # the real backends run networks (GPU at scale: resources.models)
    params:
        p=P("masks"),
        videos=batch_videos,
    shell:
        "python scripts/masks.py --params {params.p:q} --clips {input.clips} --raw {input.raw} --videos {params.videos} --out {output} > {log} 2>&1"


rule maskqc:
    input:
        clips=f"{W}/clips/{{vbatch}}",
        masks=f"{W}/masks/{{vbatch}}",
        code=CODE("maskqc"),
    output:
        directory(f"{W}/maskqc/{{vbatch}}"),
    log:
        f"{W}/logs/maskqc/{{vbatch}}.log",
    conda:
        ENV
    resources:
        **RES("default"),
    params:
        p=P("maskqc"),
        videos=batch_videos,
    shell:
        "python scripts/maskqc.py --params {params.p:q} --clips {input.clips} --masks {input.masks} --videos {params.videos} --out {output} > {log} 2>&1"


rule backgrounds:
    input:
        clips=f"{W}/clips/{{vbatch}}",
        masks=f"{W}/masks/{{vbatch}}",
        maskqc=f"{W}/maskqc/{{vbatch}}",
        code=CODE("backgrounds"),
    output:
        directory(f"{W}/backgrounds/{{vbatch}}"),
    log:
        f"{W}/logs/backgrounds/{{vbatch}}.log",
    conda:
        ENV
    threads: RES("models")["cpus_per_task"]
    resources:
        **RES("models"),  # the real backends run networks (GPU at scale: resources.models)
    params:
        p=P("backgrounds"),
        videos=batch_videos,
    shell:
        "python scripts/backgrounds.py --params {params.p:q} --clips {input.clips} --masks {input.masks} --maskqc {input.maskqc} --videos {params.videos} --out {output} > {log} 2>&1"
