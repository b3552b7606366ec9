# teacher -> student_16 -> student_8 -> student_4, and student_alt from student_8 (another method to
# compare), by DMD2 or MeanFlow (distill.<student>.method); one DVC stage each. pvtt/train/phases.py.

for _student, _init in STUDENT_INIT.items():

    rule:
        name:
            _student
        input:
            latents=f"{A}/latents",
            teacher=f"{A}/teacher",
            init=f"{A}/{_init}",
            code=CODE(_student),
        output:
            directory(f"{A}/{_student}"),
        log:
            main=f"{W}/logs/{_student}.log",
            # The quality gate's verdict: a log, so Snakemake keeps it when the gate fails the job.
            gate=f"{W}/logs/{_student}.gate.json",
        cache: True  # between-workflow output cache: `snakemake --cache` with SNAKEMAKE_OUTPUT_CACHE set
        conda:
            ENV
        threads: RES("train")["cpus_per_task"]
        resources:
            **RES("train"),
        params:
            p=P(_student),
            student=_student,
            checkpoints=f"{W}/checkpoints/{_student}",
        shell:
            torchrun(
                "scripts/distill.py --params {params.p:q} --latents {input.latents} --teacher {input.teacher}"
                " --init {input.init} --student {params.student} --out {output} --threads {threads}"
                " --gpus {resources.gpu} --checkpoint-dir {params.checkpoints} --gate-report {log.gate}"
                " > {log.main} 2>&1"
            )
