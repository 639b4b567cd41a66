#!/usr/bin/env bash
# `make gpu-check`: on a machine with an NVIDIA GPU, PyTorch and ONNX Runtime already installed.
# Runs the tests marked gpu, then scripts/gpu_check.py; everything lands in $RESULTS
# (default benchmarks/results/gpu-<date>), records as JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
RESULTS=${RESULTS:-benchmarks/results/gpu-$(date -u +%Y-%m-%d)}
mkdir -p "$RESULTS"
nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv | tee "$RESULTS/nvidia-smi.csv"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" EDGEKIT_NO_PROGRESS=1
# Only the files that hold gpu tests: the others import libraries a bare GPU machine may lack.
"$PY" -m pytest -q -m gpu -p no:cacheprovider $(grep -rl "mark.gpu" tests --include="*.py") 2>&1 | tee "$RESULTS/pytest-gpu.log"
"$PY" scripts/gpu_check.py --out "$RESULTS" "$@"
