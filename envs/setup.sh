#!/usr/bin/env bash
# One-time setup of a fresh machine: system packages (ffmpeg) and the pinned .venv.
# Idempotent; `make run` / `make test` call it through the .venv/.installed stamp.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || need_apt+=(ffmpeg)
command -v git >/dev/null 2>&1 || need_apt+=(git)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
"$PYTHON" -c 'import sys; assert sys.version_info[:2] >= (3, 11), f"Python >= 3.11 needed, found {sys.version}"'
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
echo "setup: installing pinned Python packages into .venv (torch $(grep '^torch==' envs/constraints.txt | cut -d= -f3))"
# sam2 ships as an sdist: SAM2_BUILD_CUDA=0 skips its optional CUDA post-processing kernel.
# The project itself, editable, with its pinned dependencies (pyproject.toml) and the dev tools.
SAM2_BUILD_CUDA=0 .venv/bin/pip install -q --disable-pip-version-check -e ".[dev]" -c envs/constraints.txt
# pyiqa (MUSIQ) without its ~700 MB of dependencies (bitsandbytes, datasets, ...): the MUSIQ
# architecture needs only what the line above installs.
.venv/bin/pip install -q --disable-pip-version-check --no-deps -r envs/requirements-nodeps.txt -c envs/constraints.txt
.venv/bin/python -c 'import torch, torchvision, diffsynth, cv2, scenedetect, snakemake, dvc, onnxruntime, genbuild, pvtt; print("setup: ok, torch", torch.__version__, "torchvision", torchvision.__version__)'
