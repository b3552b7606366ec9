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
    threads: R("train", "threads", 2)
    log:
        f"{W}/logs/teacher.log",
    resources:
        mem_mb=R("train", "mem_mb", 8000),
        runtime=R("train", "runtime", 240),
        cpus_per_task=R("train", "threads", 1),
        **PART,
        gpu=R("train", "gpus", 0),
    shell:
        # torchrun: one process per GPU of the job (one on CPU); checkpoints outside the output.
        "{PY} -m torch.distributed.run --standalone --nproc_per_node $(( {resources.gpu} > 1 ? {resources.gpu} : 1 ))"
        " scripts/teacher.py --params {params.p:q} --dataset {input.dataset} --out {output} --threads {threads}"
        " --gpus {resources.gpu} --checkpoint-dir {W}/checkpoints/teacher > {log} 2>&1"
