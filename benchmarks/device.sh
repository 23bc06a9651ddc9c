#!/usr/bin/env bash
# engine=fast on a GPU machine without network, in one run of at most 8 minutes: installs the
# carried wheels into the image's Python 3.12 (which has JAX, CUDA, NumPy 2 and the rest),
# unpacks the carried data, and runs benchmarks/device_runs.py's four cases; $OUT gets
# device.json (s/round, whole process, peak GPU memory, JAX device per case), a log per
# case and nvidia-smi's view.
#
#   here, once:   bash benchmarks/device_bundle.sh             (writes .device-bundle/)
#   there:        bash benchmarks/device.sh   (.device-bundle/ copied along; allow 480 s; $OUT set)
#   CPU test:     JAX_PLATFORMS=cpu PYTHON=<a Python 3.12 with JAX and pip> OUT=/tmp/out \
#                 bash benchmarks/device.sh --quick
# Extra arguments go to device_runs.py (--quick, --cases a,b, --deadline S).
set -uo pipefail
cd "$(dirname "$0")/.."
B=${DEVICE_BUNDLE:-.device-bundle}
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/fedrecon-device-out}
SITE=${DEVICE_SITE:-/tmp/fedrecon-site}
DATA=${DEVICE_DATA:-/tmp/fedrecon-data}
mkdir -p "$OUT" "$DATA"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
  "$B"/wheels/*.whl || { echo "device.sh: installing $B/wheels failed" >&2; exit 1; }
tar -xzf "$B/data.tar.gz" -C "$DATA" || { echo "device.sh: unpacking $B/data.tar.gz failed" >&2; exit 1; }
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export FEDRECON_BENCH_DATA="$DATA" WANDB_MODE=offline PYTHONUNBUFFERED=1
(nvidia-smi; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv) > "$OUT/nvidia-smi.txt" 2>&1 || true
echo "setup took ${SECONDS} s"
"$PY" benchmarks/device_runs.py --data "$DATA" --out "$OUT" --deadline $((${DEVICE_DEADLINE:-450} - SECONDS)) "$@"
