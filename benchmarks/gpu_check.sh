#!/usr/bin/env bash
# The GPU check: one prepared call on a lent GPU machine (see ../.library/device), at most 8 minutes.
# It installs the carried wheels that machine lacks, then runs the benchmark harness there: the default
# run (2 repetitions, cold and warm compile cache) and the 27-config sweep with the basic launcher and
# the fused one (a program per width, and one padded program), printing the same table as `make bench`
# does on the CPU (no PyTorch contender: it is a CPU loop), and on a machine with several GPUs one fused
# program on 1 GPU against all of them (benchmarks/devices.py). Targets there: the fused grid <= 10 s from
# start to end, >= 10x faster than the basic launcher.
#
# Prepare once, here (.whl/ is git-ignored and travels as a carried path):
#   for p in hydra-core==1.3.8 omegaconf==2.3.1 tensorboardX==2.6.5; do
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 --platform any -d .whl "$p"; done
#   python3 -m pip wheel --no-deps antlr4-python3-runtime==4.9.3 -w .whl   # published as sdist only
# Then call the device tool's `run` with carry [".whl"] and the command `bash benchmarks/gpu_check.sh` (timeout_s 540),
# and copy the table it prints (also left in $OUT/RESULTS-gpu.md) into benchmarks/RESULTS.md.
# BENCH_ARGS adds harness flags, e.g. BENCH_ARGS=--quick to check this script's plumbing on a CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
out="${OUT:-/tmp}/RESULTS-gpu.md"
# shellcheck disable=SC2086
timeout 480 python3 benchmarks/bench.py --no-torch --reps 2 --out "$out" ${BENCH_ARGS:-}
# Several GPUs: one fused program on 1 of them against all of them (benchmarks/devices.py).
if [ "$(python3 -c 'import jax; print(jax.local_device_count())')" -gt 1 ]; then
  timeout 90 python3 benchmarks/devices.py --reps 1 --out "${OUT:-/tmp}/RESULTS-devices-gpu.md"
fi
