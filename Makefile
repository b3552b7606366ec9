# The two commands: `make run` (set up + build the embedded sample) and `make test`.
SHELL := /bin/bash
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
STAMP := $(VENV)/.installed
CORES ?= all

.PHONY: setup run test test-fast lint bench-dag bench-train bench-data hpo dvc-yaml clean pull

$(STAMP): pyproject.toml envs/requirements-nodeps.txt envs/constraints.txt envs/setup.sh
	bash envs/setup.sh
	touch $@

setup: $(STAMP)

# PIPELINE=pvtt or PIPELINE=avgen builds one pipeline alone (default: both).
PIPELINE ?=
run: setup
	snakemake --cores $(CORES) --profile profiles/local $(if $(PIPELINE),all_$(PIPELINE))
	@$(if $(filter avgen,$(PIPELINE)),,echo "PVTT report: $(CURDIR)/artifacts/eval/report.html")
	@$(if $(filter pvtt,$(PIPELINE)),,echo "AVGen report: $(CURDIR)/artifacts/avgen_eval/report.html")

test: setup
	python -m pytest -q

test-fast: setup
	python -m pytest -q -m "not e2e and not slow"

# What pre-commit runs (.pre-commit-config.yaml): ruff (lint + import order), snakefmt, snakemake --lint,
# and dvc.yaml against the workflow tables.
lint: setup
	ruff check .
	snakefmt --check Snakefile rules
	snakemake --lint --cores 1
	python -m genbuild.dvcgen --check

bench-dag: setup
	python -m pvtt.bench.dag
	python -m avgen.bench.dag

# Data stages: shots + clips vs a bare ffmpeg decode+encode of the same videos; last line ratio=<stages/bare>.
bench-data: setup
	python -m pvtt.bench.data

# Training throughput: data path alone vs full teacher step; last line loader_to_step=<ratio>.
bench-train: setup
	snakemake --cores $(CORES) --profile profiles/local artifacts/latents
	python -m pvtt.bench.train

# AVGen seconds per sample (prompt -> mp4 frames + audio) of stage 3 and INT8; last line seconds_per_sample=<s>.
.PHONY: bench-avgen
bench-avgen: setup
	snakemake --cores $(CORES) --profile profiles/local artifacts/avgen_int8
	python -m avgen.bench.sample

# Inference: seconds per video (encode / denoise / decode) of the teacher and every student form, the service
# under load; last line speedup=<teacher / fastest student_4 form within the gate> (pvtt/bench/infer.py).
.PHONY: bench-infer serve
bench-infer: setup
	snakemake --cores $(CORES) --profile profiles/local artifacts/engine artifacts/student_16 artifacts/student_8
	python -m pvtt.bench.infer --out work/bench/infer.json

# The edit as an HTTP service on deploy.serve.host:port (pvtt/serve/app.py), with deploy.model's artifact.
serve: setup
	snakemake --cores $(CORES) --profile profiles/local artifacts/engine
	python -m pvtt serve

# Optional: Optuna search over the teacher's lr/batch/accumulation/warm-up on the sample's latents.
hpo: setup
	snakemake --cores $(CORES) --profile profiles/local work/hpo
	@cat work/hpo/best_params.yaml

dvc-yaml: setup
	python -m genbuild.dvcgen

clean:
	rm -rf work artifacts .snakemake

# Chaos: the ci DAG built clean, then again while random jobs (and sometimes Snakemake) are SIGKILLed,
# resumed each time by Snakemake's own recovery; artifacts must be byte-identical, `dvc status` clean,
# no item lost. CHAOS_SEED, CHAOS_KILLS, CHAOS_KINDS: see tests_chaos/chaos.py. Last line kills=... lost=...
.PHONY: test-chaos
test-chaos: setup
	CHAOS_TARGET="$${CHAOS_TARGET:-all_pvtt}" python tests_chaos/chaos.py

# GPU check: every GPU measurement in one script per pipeline (pvtt/bench/gpu_check.py, avgen/bench/gpu_check.py: the 3.8B
# preset's training step and seconds per sample): a 1.3B teacher step eager /
# compiled / ZeRO-2, a DMD2 step, the Wan VAE, every real backend at tiny width. TINY=1: the same code at
# tiny width (CPU, the test suite runs it). Writes $(GPU_CHECK_OUT)/gpu_check.json and table.md; last line
# teacher_step_s=... mfu=... On the GPU machine (no .venv, no network): carry work/gpu_wheels (made here by
# `make gpu-check-wheels`), pip install them with --target /tmp/site, then PYTHONPATH=/tmp/site make gpu-check.
GPU_CHECK_OUT ?= work/gpu_check
GPU_PYTHON := $(if $(wildcard $(VENV)/bin/python),python,python3)
.PHONY: gpu-check gpu-check-wheels
gpu-check: $(if $(wildcard $(VENV)/bin/python),setup)
	$(GPU_PYTHON) -m pvtt.bench.gpu_check $(if $(TINY),--tiny) --out $(GPU_CHECK_OUT)
	$(GPU_PYTHON) -m avgen.bench.gpu_check $(if $(TINY),--tiny) --out $(GPU_CHECK_OUT)

gpu-check-wheels: setup
	bash envs/gpu_wheels.sh work/gpu_wheels

# SLURM: the ci preset up to the teacher through `--profile slurm` on a throw-away single-node
# cluster (root; installs slurm-wlm + munge with apt-get if missing). See README "SLURM".
.PHONY: test-slurm
test-slurm: setup
	bash envs/slurm_packages.sh
	bash tests_slurm/run.sh

pull: setup
	python -m genbuild.versions pull
