# Clips with sound -> ingest -> quality filters -> 512x512 @ 8 fps + 16 kHz + log-mel shards -> dataset.


rule avgen_sample:
    """The embedded sample: procedural clips with known sound events, and clips planted to fail each filter."""
    input:
        code=CODE("avgen_sample"),
    output:
        directory(f"{AV_W}/sample"),
    log:
        f"{W}/logs/avgen/sample.log",
    conda:
        ENV
    resources:
        **RES("default"),
    params:
        p=P("avgen_sample"),
    shell:
        "python scripts/avgen_sample.py --params {params.p:q} --out {output} > {log} 2>&1"


rule avgen_ingest:
    """One batch of manifest rows: each source (local file or URL) checked and copied in, or a reject."""
    input:
        manifest=av_manifest_inputs,
        code=CODE("avgen_ingest"),
    output:
        directory(f"{AV_W}/raw/{{avbatch}}"),
    log:
        f"{W}/logs/avgen/ingest/{{avbatch}}.log",
    conda:
        ENV
    resources:
        **RES("default"),
    params:
        p=P("avgen_ingest"),
        manifest=AV_MANIFEST,
    shell:
        "python scripts/avgen_ingest.py --params {params.p:q} --manifest {params.manifest} --batch {wildcards.avbatch} --out {output} > {log} 2>&1"


rule avgen_filter:
    """Each clip of a batch probed and measured; a clip failing a threshold is a reject naming it."""
    input:
        raw=f"{AV_W}/raw/{{avbatch}}",
        code=CODE("avgen_filter"),
    output:
        directory(f"{AV_W}/filter/{{avbatch}}"),
    log:
        f"{W}/logs/avgen/filter/{{avbatch}}.log",
    conda:
        ENV
    resources:
        **RES("default"),
    params:
        p=P("avgen_filter"),
    shell:
        "python scripts/avgen_filter.py --params {params.p:q} --raw {input.raw} --out {output} > {log} 2>&1"


rule avgen_format:
    """Kept clips -> the model's format (square video at fps, mono audio, log-mel) in WebDataset shards."""
    input:
        raw=f"{AV_W}/raw/{{avbatch}}",
        filt=f"{AV_W}/filter/{{avbatch}}",
        code=CODE("avgen_format"),
    output:
        directory(f"{AV_W}/format/{{avbatch}}"),
    log:
        f"{W}/logs/avgen/format/{{avbatch}}.log",
    conda:
        ENV
    resources:
        **RES("default"),
    params:
        p=P("avgen_format"),
    shell:
        "python scripts/avgen_format.py --params {params.p:q} --raw {input.raw} --filter {input.filt} --batch {wildcards.avbatch} --out {output} > {log} 2>&1"


rule avgen_pack:
    """Every batch's shards + the dataset card (pass rate, rejects per reason): the avgen_dataset milestone."""
    input:
        unpack(av_pack_work_inputs),
        code=CODE("avgen_pack"),
    output:
        directory(f"{A}/avgen_dataset"),
    log:
        f"{W}/logs/avgen/pack.log",
    conda:
        ENV
    resources:
        **RES("default"),
    params:
        p=P("avgen_pack"),
        work=AV_W,
        batches=AV_BATCHES,
    shell:
        "python scripts/avgen_pack.py --params {params.p:q} --work {params.work} --batches {params.batches} --out {output} > {log} 2>&1"
