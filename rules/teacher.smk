# Packed train split -> teacher checkpoint (DVC stage `teacher`).


rule teacher:
    input:
        dataset=f"{A}/dataset",
        code=CODE("teacher"),
    output:
        directory(f"{A}/teacher"),
    params:
        p=P("teacher"),
    threads: R("train", "threads", 2)
    log:
        f"{W}/logs/teacher.log",
    benchmark:
        f"{W}/benchmarks/teacher.tsv"
    resources:
        mem_mb=R("train", "mem_mb", 8000),
        runtime=R("train", "runtime", 240),
    shell:
        "{PY} scripts/teacher.py --params {params.p:q} --dataset {input.dataset} --out {output} --threads {threads} > {log} 2>&1"
