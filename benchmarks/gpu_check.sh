#!/usr/bin/env bash
# The grader on one GPU in under five minutes: ResNet18's epoch time under the eai-lab2 recipe,
# the test pass's throughput, and its fidelity to float32 (benchmarks/gpu_check.py). Run from
# a checkout set up with scripts/setup.sh, on a machine with an NVIDIA GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
exec timeout 300 .venv/bin/python benchmarks/gpu_check.py "$@"
