#!/usr/bin/env bash
# The wheels `make gpu-check` needs on the GPU machine beyond what its image has (Python 3.12, torch,
# transformers, peft, timm, accelerate, safetensors, einops, opencv, onnxruntime, ...; no network).
# Collected here (`make gpu-check-wheels`) into work/gpu_wheels/ (git-ignored: a device run names it in
# `carry`), at the versions of this project's .venv; then, there:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site work/gpu_wheels/*.whl
#   PYTHONPATH=/tmp/site make gpu-check
#
# What is carried and why (the modules a full `--tiny` run imports, less the image's packages):
#   DiT, VAE, Wan/FLUX backends  diffsynth; modelscope + modelscope-hub (diffsynth imports them at start),
#                                cryptography + cffi (modelscope-hub imports them); ftfy + wcwidth (umT5, CLIP)
#   ZeRO-2                       deepspeed (built from its sdist: pure Python, ops JIT-only), hjson, pydantic,
#                                pydantic-core, annotated-types, typing-inspection
#   grounded_sam2                sam2 (sdist, built without its CUDA extension), hydra-core, omegaconf,
#                                antlr4-python3-runtime, iopath
#   metrics                      open_clip_torch, lpips, pyiqa (MUSIQ)
#   AVGen (avgen.bench.gpu_check) diffusers (ModelMixin classes, AutoencoderKL, the flow-matching scheduler)
#   the project                  pvtt, genbuild: the working tree travels anyway
# Not carried: transformers 5.25 / tokenizers 0.23.3 (pinned here): 5.25 needs huggingface-hub >= 2.4 and its
# new HTTP stack, ~20 MiB more; the check runs the image's transformers and reports its version. TensorRT:
# several hundred MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-work/gpu_wheels}"
LIMIT_MIB="${GPU_WHEELS_LIMIT_MIB:-60}"   # the device's 64 MiB covers the working tree too (~2 MiB)
PY=.venv/bin/python
[ -x "$PY" ] || { echo "gpu_wheels: $PY missing: run 'make setup' first" >&2; exit 1; }

WHEELS=(diffsynth modelscope modelscope-hub cryptography cffi ftfy wcwidth
        hjson pydantic pydantic-core annotated-types typing-inspection
        hydra-core omegaconf open_clip_torch lpips pyiqa diffusers)
SDISTS=(deepspeed sam2 antlr4-python3-runtime iopath)   # no wheel of these versions: built here, pure Python

pins() {  # NAME==VERSION as installed in .venv
  "$PY" - "$@" <<'EOF'
import importlib.metadata as m, sys
print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))
EOF
}

quiet() { grep -v "^WARNING: Location 'file:" || true; }   # this machine's pip config names absent local indexes

rm -rf "$OUT"
mkdir -p "$OUT"
# Binary wheels for the GPU machine's CPython 3.12 on x86-64 Linux, for glibc >= 2.28 (the image's glibc is not
# read here: Python 3.12.3 suggests Ubuntu 24.04, glibc 2.39); pure ones match any platform.
# shellcheck disable=SC2046
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 \
  --abi none --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d "$OUT" $(pins "${WHEELS[@]}") 2>&1 | quiet
# shellcheck disable=SC2046
SAM2_BUILD_CUDA=0 DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$OUT" $(pins "${SDISTS[@]}") 2>&1 | quiet

bad=$(find "$OUT" -type f ! -name '*.whl' -o -type f -name '*-cp3[0-9]*-cp3[0-9]*-*' ! -name '*cp312*' ! -name '*abi3*')
[ -z "$bad" ] || { echo "gpu_wheels: not installable on CPython 3.12: $bad" >&2; exit 1; }
n=$(find "$OUT" -name '*.whl' | wc -l)
want=$(( ${#WHEELS[@]} + ${#SDISTS[@]} ))
[ "$n" -eq "$want" ] || { echo "gpu_wheels: $n wheels in $OUT, expected $want" >&2; exit 1; }
ls -l "$OUT" | awk 'NR > 1 {printf "%8.2f MiB  %s\n", $5 / 1048576, $9}'
total=$(du -cb "$OUT"/*.whl | tail -1 | cut -f1)
awk -v t="$total" -v n="$n" -v lim="$LIMIT_MIB" 'BEGIN {printf "gpu_wheels: %d wheels, %.1f MiB (limit %d MiB)\n", n, t / 1048576, lim}'
[ "$total" -le $(( LIMIT_MIB * 1048576 )) ] || { echo "gpu_wheels: over ${LIMIT_MIB} MiB" >&2; exit 1; }
