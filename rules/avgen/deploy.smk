# stage3 -> the INT8 model (weight-only per-channel int8 linears) and its quality delta.


rule avgen_int8:
    input:
        model=f"{A}/avgen_stage3",
        features=f"{A}/avgen_features",
        code=CODE("avgen_int8"),
    output:
        directory(f"{A}/avgen_int8"),
    log:
        f"{W}/logs/avgen/int8.log",
    conda:
        ENV
    threads: RES("eval")["cpus_per_task"]
    resources:
        **RES("eval"),
    params:
        p=P("avgen_int8"),
    shell:
        "python scripts/avgen_int8.py --params {params.p:q} --model {input.model} --features {input.features} --out {output} --threads {threads} > {log} 2>&1"
