# Latent cache -> teacher checkpoint (DVC stage `teacher`).


rule teacher:
    input:
        latents=f"{A}/latents",
        code=CODE("teacher"),
    output:
        directory(f"{A}/teacher"),
    params:
        p=P("teacher"),
    cache: True  # between-workflow output cache: `snakemake --cache` with SNAKEMAKE_OUTPUT_CACHE set
    threads: RES("train")["cpus_per_task"]
    log:
        f"{W}/logs/teacher.log",
    resources:
        **RES("train"),
    shell:
        # Checkpoints live outside the output: Snakemake deletes the output of a failed job.
        TORCHRUN + " scripts/teacher.py --params {params.p:q} --latents {input.latents} --out {output}"
        " --threads {threads} --gpus {resources.gpu} --checkpoint-dir {W}/checkpoints/teacher > {log} 2>&1"
