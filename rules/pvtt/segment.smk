# Clips -> per-frame product masks -> mask QC -> clean backgrounds (one job per video).


rule masks:
    input:
        clips=f"{W}/clips/{{video}}",
        raw=f"{W}/raw/{{video}}",  # info.json: the product category (prompt of grounded_sam2)
        code=CODE("masks"),
    output:
        directory(f"{W}/masks/{{video}}"),
    log:
        f"{W}/logs/masks/{{video}}.log",
    conda:
        ENV
    threads: RES("models")["cpus_per_task"]
    resources:
        **RES("models"),  # the real backends run networks (GPU at scale: resources.models)
    params:
        p=P("masks"),
    shell:
        "python scripts/masks.py --params {params.p:q} --clips {input.clips} --raw {input.raw} --out {output} > {log} 2>&1"


rule maskqc:
    input:
        clips=f"{W}/clips/{{video}}",
        masks=f"{W}/masks/{{video}}",
        code=CODE("maskqc"),
    output:
        directory(f"{W}/maskqc/{{video}}"),
    log:
        f"{W}/logs/maskqc/{{video}}.log",
    conda:
        ENV
    resources:
        **RES("default"),
    params:
        p=P("maskqc"),
    shell:
        "python scripts/maskqc.py --params {params.p:q} --clips {input.clips} --masks {input.masks} --out {output} > {log} 2>&1"


rule backgrounds:
    input:
        clips=f"{W}/clips/{{video}}",
        masks=f"{W}/masks/{{video}}",
        maskqc=f"{W}/maskqc/{{video}}",
        code=CODE("backgrounds"),
    output:
        directory(f"{W}/backgrounds/{{video}}"),
    log:
        f"{W}/logs/backgrounds/{{video}}.log",
    conda:
        ENV
    threads: RES("models")["cpus_per_task"]
    resources:
        **RES("models"),  # the real backends run networks (GPU at scale: resources.models)
    params:
        p=P("backgrounds"),
    shell:
        "python scripts/backgrounds.py --params {params.p:q} --clips {input.clips} --masks {input.masks} --maskqc {input.maskqc} --out {output} > {log} 2>&1"
