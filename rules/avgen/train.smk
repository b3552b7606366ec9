# Features -> stage1 (unimodal) -> stage2 (joint) -> stage3 (high-quality fine-tune), each a DVC milestone.
for _stage, _prev in zip(avgen.STAGES, [None, *avgen.STAGES[:-1]]):

    rule:
        name:
            f"avgen_{_stage}"
        input:
            features=f"{A}/avgen_features",
            previous=[f"{A}/avgen_{_prev}"] if _prev else [],
            code=CODE(f"avgen_{_stage}"),
        output:
            directory(f"{A}/avgen_{_stage}"),
        log:
            f"{W}/logs/avgen/{_stage}.log",
        conda:
            ENV
        threads: RES("train")["cpus_per_task"]
        resources:
            **RES("train"),
        params:
            p=P(f"avgen_{_stage}"),
            # Through params, evaluated here; a `shell:` string is evaluated at run time (last loop values).
            stage=_stage,
            init=f" --init {A}/avgen_{_prev}" if _prev else "",
            checkpoints=f"{W}/checkpoints/avgen_{_stage}",
            live=f"{W}/dvclive/avgen_{_stage}",
        shell:
            torchrun(
                "scripts/avgen_train.py --params {params.p:q} --stage {params.stage} --features {input.features}{params.init}"
                " --out {output} --threads {threads} --gpus {resources.gpu} --checkpoint-dir {params.checkpoints}"
                " --live-dir {params.live} > {log} 2>&1"
            )
