# student_4 -> ONNX (+ onnxruntime check) -> TensorRT where available (DVC stage `engine`).


rule engine:
    input:
        student=f"{A}/student_4",
        dataset=f"{A}/dataset",
        code=CODE("engine"),
    output:
        directory(f"{A}/engine"),
    params:
        p=P("engine"),
    threads: R("eval", "threads", 2)
    log:
        f"{W}/logs/engine.log",
    resources:
        mem_mb=R("eval", "mem_mb", 4000),
        runtime=R("eval", "runtime", 60),
        cpus_per_task=R("eval", "threads", 1),
        **PART,
        gpu=R("eval", "gpus", 0),
    shell:
        "{PY} scripts/engine.py --params {params.p:q} --student {input.student} --dataset {input.dataset} --out {output} --threads {threads} > {log} 2>&1"
