# Latent cache -> teacher in three chained phases (DVC stages teacher_phase1, teacher_phase2, teacher).
# Phase k starts from phase k-1 when both train the same model (pvtt.train.phases.phase_params);
# `teacher` (phase 3) is the one the students distil.
for (_phase, _name), _prev in zip(TEACHER_PHASES, [None] + [r for _, r in TEACHER_PHASES]):
    # Phase 1 reads its own cache when it trains another model or resolution (latents/phase1).
    _own_cache = _phase == "phase1" and PHASE1_OWN_LATENTS
    _init_arg = f" --init {A}/{_prev}" if _prev else ""

    rule:
        name:
            _name
        input:
            latents=f"{A}/latents",
            dataset=f"{A}/dataset",  # read with teacher.data: stream (pvtt.train.loader)
            previous=[f"{A}/{_prev}"] if _prev else [],
            code=CODE(_name),
        output:
            directory(f"{A}/{_name}"),
        log:
            f"{W}/logs/{_name}.log",
        cache: True  # between-workflow output cache: `snakemake --cache` with SNAKEMAKE_OUTPUT_CACHE set
        conda:
            ENV
        threads: RES("train")["cpus_per_task"]
        resources:
            **RES("train"),
        params:
            p=P(_name),
            # Through params, which Snakemake evaluates here; a `shell:` string is evaluated at run
            # time, when the loop variables hold the last phase's values.
            phase=_phase,
            latents=(lambda wc, input: f"{input.latents}/phase1") if _own_cache else (lambda wc, input: input.latents),
            init=_init_arg,
            checkpoints=f"{W}/checkpoints/{_name}",
            live=f"{W}/dvclive/{_name}",
        shell:
            # Checkpoints live outside the output: Snakemake deletes the output of a failed job.
            torchrun(
                "scripts/teacher.py --params {params.p:q} --phase {params.phase}"
                " --latents {params.latents}{params.init} --dataset {input.dataset}"
                " --out {output} --threads {threads} --gpus {resources.gpu} --checkpoint-dir {params.checkpoints}"
                " --live-dir {params.live} > {log} 2>&1"
            )
