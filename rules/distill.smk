# teacher -> student_16 -> student_8 -> student_4 by DMD2 (one DVC stage each).

STUDENT_INIT = {"student_16": "teacher", "student_8": "student_16", "student_4": "student_8"}

for _student, _init in STUDENT_INIT.items():

    rule:
        name:
            _student
        input:
            dataset=f"{A}/dataset",
            teacher=f"{A}/teacher",
            init=f"{A}/{_init}",
            code=CODE(_student),
        output:
            directory(f"{A}/{_student}"),
        params:
            p=P(_student),
            student=_student,
        threads: R("train", "threads", 2)
        log:
            f"{W}/logs/{_student}.log",
        benchmark:
            f"{W}/benchmarks/{_student}.tsv"
        resources:
            mem_mb=R("train", "mem_mb", 8000),
            runtime=R("train", "runtime", 240),
        shell:
            "{PY} scripts/distill.py --params {params.p:q} --dataset {input.dataset} --teacher {input.teacher} --init {input.init} --student {params.student} --out {output} --threads {threads} > {log} 2>&1"
