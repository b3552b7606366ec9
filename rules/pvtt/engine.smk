# student_4 -> ONNX (+ onnxruntime check) -> TensorRT where available (DVC stage `engine`).


rule engine:
    input:
        student=f"{A}/student_4",
        dataset=f"{A}/dataset",
        code=CODE("engine"),
    output:
        directory(f"{A}/engine"),
    log:
        f"{W}/logs/engine.log",
    conda:
        ENV
    threads: RES("eval")["cpus_per_task"]
    resources:
        **RES("eval"),
    params:
        p=P("engine"),
    shell:
        "python scripts/engine.py --params {params.p:q} --student {input.student} --dataset {input.dataset} --out {output} --threads {threads} > {log} 2>&1"
