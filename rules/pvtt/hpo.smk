# Optional target, not in `all`: Optuna search over the teacher's lr, batch, accumulation and
# warm-up on the latent cache (`make hpo` / `snakemake work/hpo`). Writes best_params.yaml, an
# overlay for the build, beside best.json and trials.csv.


rule hpo:
    input:
        latents=f"{A}/latents",
        code=CODE("hpo"),
    output:
        directory(f"{W}/hpo"),
    log:
        f"{W}/logs/hpo.log",
    conda:
        ENV
    threads: RES("train")["cpus_per_task"]
    resources:
        **RES("train"),
    params:
        p=P("hpo"),
    shell:
        "python scripts/hpo.py --params {params.p:q} --latents {input.latents} --out {output} --threads {threads} > {log} 2>&1"
