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

run: setup
	snakemake --cores $(CORES) --profile profiles/local
	@echo "Report: $(CURDIR)/artifacts/eval/report.html"

test: setup
	python -m pytest -q

test-fast: setup
	python -m pytest -q -m "not e2e"

# What pre-commit runs (.pre-commit-config.yaml): ruff (lint + import order), snakefmt, snakemake --lint,
# and dvc.yaml against the workflow tables.
lint: setup
	ruff check .
	snakefmt --check Snakefile rules
	snakemake --lint --cores 1
	python -m genbuild.dvcgen --check

bench-dag: setup
	python -m pvtt.bench.dag

# Data stages: shots + clips vs a bare ffmpeg decode+encode of the same videos; last line ratio=<stages/bare>.
bench-data: setup
	python -m pvtt.bench.data

# Training throughput: data path alone vs full teacher step; last line loader_to_step=<ratio>.
bench-train: setup
	snakemake --cores $(CORES) --profile profiles/local artifacts/latents
	python -m pvtt.bench.train

# Optional: Optuna search over the teacher's lr/batch/accumulation/warm-up on the sample's latents.
hpo: setup
	snakemake --cores $(CORES) --profile profiles/local work/hpo
	@cat work/hpo/best_params.yaml

dvc-yaml: setup
	python -m genbuild.dvcgen

clean:
	rm -rf work artifacts .snakemake

# SLURM: the ci preset up to the teacher through `--profile slurm` on a throw-away single-node
# cluster (root; installs slurm-wlm + munge with apt-get if missing). See README "SLURM".
.PHONY: test-slurm
test-slurm: setup
	bash envs/slurm_packages.sh
	bash tests_slurm/run.sh

pull: setup
	python -m genbuild.versions pull
