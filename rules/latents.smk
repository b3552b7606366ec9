# Packed train/val splits -> latent cache (DVC stage `latents`): encoded once, read by every trainer.


rule latents:
    input:
        dataset=f"{A}/dataset",
        code=CODE("latents"),
    output:
        directory(f"{A}/latents"),
    params:
        p=P("latents"),
    cache: True  # between-workflow output cache: `snakemake --cache` with SNAKEMAKE_OUTPUT_CACHE set
    threads: RES("train")["cpus_per_task"]
    log:
        f"{W}/logs/latents.log",
    resources:
        **RES("train"),
    shell:
        "{PY} scripts/latents.py --params {params.p:q} --dataset {input.dataset} --out {output} --threads {threads} > {log} 2>&1"
