# Latent cache -> teacher in three chained phases (DVC stages teacher_phase1, teacher_phase2, teacher).
# Phase k starts from phase k-1 when both train the same model (pvtt.teacher.phase_params);
# `teacher` (phase 3) is the one the students distil.
TEACHER_PHASES = [("phase1", "teacher_phase1", None), ("phase2", "teacher_phase2", "teacher_phase1"),
                  ("phase3", "teacher", "teacher_phase2")]

for _phase, _name, _prev in TEACHER_PHASES:
    # Phase 1 reads its own cache when it trains another model or resolution (latents/phase1).
    _latents_arg = f"{A}/latents/phase1" if _phase == "phase1" and PHASE1_OWN_LATENTS else f"{A}/latents"
    _init_arg = f" --init {A}/{_prev}" if _prev else ""

    rule:
        name: _name
        input:
            latents=f"{A}/latents",
            dataset=f"{A}/dataset",  # read with teacher.data: stream (pvtt.train.loader)
            previous=[f"{A}/{_prev}"] if _prev else [],
            code=CODE(_name),
        output:
            directory(f"{A}/{_name}"),
        params:
            p=P(_name),
            # Through params, which Snakemake evaluates here; a `shell:` string is evaluated at run
            # time, when the loop variables hold the last phase's values.
            phase=_phase,
            latents=_latents_arg,
            init=_init_arg,
        cache: True  # between-workflow output cache: `snakemake --cache` with SNAKEMAKE_OUTPUT_CACHE set
        threads: RES("train")["cpus_per_task"]
        log:
            f"{W}/logs/{_name}.log",
        resources:
            **RES("train"),
        shell:
            # Checkpoints live outside the output: Snakemake deletes the output of a failed job.
            TORCHRUN + " scripts/teacher.py --params {params.p:q} --phase {params.phase} --latents {params.latents}{params.init}"
            " --dataset {input.dataset}"
            " --out {output} --threads {threads} --gpus {resources.gpu} --checkpoint-dir {W}/checkpoints/{rule}"
            " --live-dir {W}/dvclive/{rule} > {log} 2>&1"
