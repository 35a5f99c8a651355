#!/usr/bin/env bash
# The GPU check: one prepared call on a lent GPU machine (see ../.library/device), at most 5 minutes.
# It installs the carried wheels that machine lacks, then runs the benchmark harness there: the default
# run (3 repetitions) and the 27-config sweep, printing the same table as `make bench` on the CPU.
#
# Prepare once, here (the wheels travel with the working tree; .whl/ is git-ignored):
#   for p in hydra-core==1.3.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 tensorboardX==2.6.2.2; do
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 --platform any -d .whl "$p"; done
# Then call the device tool's `run` with carry [".whl"] and the command:
#   bash benchmarks/gpu_check.sh
# and copy the table it prints into benchmarks/RESULTS.md under "GPU".
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
out="${OUT:-/tmp}/RESULTS-gpu.md"
timeout 270 python3 benchmarks/bench.py --no-torch --reps 3 --out "$out"
