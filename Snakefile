# The build: one DAG over content-addressed artifacts, one part per pipeline (model family).
# rules/common.smk: helpers every pipeline's rules use (params, code inputs, resources).
# rules/<pipeline>/: that pipeline's rules, one file per stage group; each rule is thin
# (inputs, outputs, params, resources, log) and calls one scripts/<stage>.py.
# Which params and code each rule reads is defined once, in <pipeline>/pipeline.py (dvc.yaml too).


configfile: "params.yaml"


include: "rules/common.smk"
include: "rules/pvtt/pvtt.smk"
include: "rules/avgen/avgen.smk"


rule all:
    default_target: True
    input:
        PVTT_TARGETS,
        AVGEN_TARGETS,


# One pipeline alone: `snakemake all_pvtt` / `snakemake all_avgen` (`make run PIPELINE=avgen`).
rule all_pvtt:
    input:
        PVTT_TARGETS,


rule all_avgen:
    input:
        AVGEN_TARGETS,


onsuccess:
    if Path(A, "eval", "report.html").exists():
        print(f"PVTT build complete. Report: {Path(A, 'eval', 'report.html').resolve()}")
    if Path(A, "avgen_eval", "report.html").exists():
        print(f"AVGen build complete. Report: {Path(A, 'avgen_eval', 'report.html').resolve()}")
