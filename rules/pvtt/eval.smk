# Benchmark split x (teacher, students, engine) -> metrics.json + report.html (DVC stage `eval`).


rule eval:
    input:
        dataset=f"{A}/dataset",
        phases=[f"{A}/{rule}" for _, rule in TEACHER_PHASES[:-1]],
        teacher=f"{A}/teacher",
        students=expand(f"{A}/{{s}}", s=pvtt.STUDENTS),
        engine=f"{A}/engine",
        code=CODE("eval"),
    output:
        directory(f"{A}/eval"),
    log:
        f"{W}/logs/eval.log",
    benchmark:
        f"{W}/benchmarks/eval.tsv"
    conda:
        ENV
    threads: RES("eval")["cpus_per_task"]
    resources:
        **RES("eval"),
    params:
        p=P("eval"),
    shell:
        "python scripts/eval.py --params {params.p:q} --dataset {input.dataset} --teacher {input.teacher} --phases {input.phases} --students {input.students} --engine {input.engine} --out {output} --threads {threads} > {log} 2>&1"
