# Packed train/val splits -> latent cache (DVC stage `latents`): encoded once, read by every trainer.


rule latents:
    input:
        dataset=f"{A}/dataset",
        code=CODE("latents"),
    output:
        directory(f"{A}/latents"),
    log:
        f"{W}/logs/latents.log",
    cache: True  # between-workflow output cache: `snakemake --cache` with SNAKEMAKE_OUTPUT_CACHE set
    conda:
        ENV
    threads: RES("train")["cpus_per_task"]
    resources:
        **RES("train"),
    params:
        p=P("latents"),
    shell:
        "python scripts/latents.py --params {params.p:q} --dataset {input.dataset} --out {output} --threads {threads} > {log} 2>&1"
