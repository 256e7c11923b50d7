#!/usr/bin/env bash
# The one command for a lent GPU machine (scripts/benchmark/gpu_check.py says what it checks):
#   here, once:  ../shared/tools/device-prep.sh   (wheels in .whl/, CIFAR-10 in .data/)
#   device run:  bash scripts/benchmark/gpu_check.sh     carrying .whl and .data; at most 8 minutes
#                of steps (give the call a timeout of about 560 s: the install and start-up are extra)
#   anywhere:    bash scripts/benchmark/gpu_check.sh --dry-run   (the CPU, toy size; CI runs it)
#   a rerun:     bash scripts/benchmark/gpu_check.sh --steps train,short   (only those steps)
# It installs the carried wheels, unpacks CIFAR-10 to /tmp/data, and writes gpu_check.json and
# gpu_check.md (and log.txt) to $OUT, the device tool's output folder (./gpu_check_out without).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -f .data/cifar10.tgz ] && [ ! -d /tmp/data/cifar10 ]; then
  mkdir -p /tmp/data && tar xzf .data/cifar10.tgz -C /tmp/data || exit 1
fi
export PYTHONUNBUFFERED=1
python3 scripts/benchmark/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
