# Packed train split -> teacher checkpoint (DVC stage `teacher`).


rule teacher:
    input:
        dataset=f"{A}/dataset",
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
        # torchrun: one process per GPU of the job (one on CPU); checkpoints outside the output.
        "{PY} -m torch.distributed.run --standalone --nproc_per_node $(( {resources.gpu} > 1 ? {resources.gpu} : 1 ))"
        " scripts/teacher.py --params {params.p:q} --dataset {input.dataset} --out {output} --threads {threads}"
        " --gpus {resources.gpu} --checkpoint-dir {W}/checkpoints/teacher > {log} 2>&1"
