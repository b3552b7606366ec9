# Benchmark split x (stage3, int8) -> FVD, FAD, AV-Align, CLAP, CLIP, seconds per sample; HTML report with mp4s.


rule avgen_eval:
    input:
        dataset=f"{A}/avgen_dataset",
        features=f"{A}/avgen_features",
        model=f"{A}/avgen_stage3",
        int8=f"{A}/avgen_int8",
        code=CODE("avgen_eval"),
    output:
        directory(f"{A}/avgen_eval"),
    log:
        f"{W}/logs/avgen/eval.log",
    conda:
        ENV
    threads: RES("eval")["cpus_per_task"]
    resources:
        **RES("eval"),
    params:
        p=P("avgen_eval"),
    shell:
        "python scripts/avgen_eval.py --params {params.p:q} --dataset {input.dataset} --features {input.features} --model {input.model} --int8 {input.int8} --out {output} --threads {threads} > {log} 2>&1"
