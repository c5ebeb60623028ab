#!/usr/bin/env bash
# The one prepared run for a lent GPU machine (device tool; it has torch, pytest and h5py, no Hydra):
# the CUDA-only engine tests, then the GPU benchmark. Outputs under $OUT (or bench/results/).
#   bash bench/device.sh [deadline seconds for bench.gpu, default 300]
# At most 150 + deadline + 90 seconds: with the default, 540 s, inside one device call's 600 s.
# A rerun on the still-warm machine, in the few minutes a 15-minute lease leaves after that:
#   TESTS=0 bash bench/device.sh 120    (no tests; the bench starts no configuration after 120 s)
set -u
out=${OUT:-bench/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
date -u +"start %F %T UTC"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
[ "${TESTS:-1}" = 0 ] || timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_engine.py -k gpu 2>&1 | tee "$out/gpu-tests.txt"
deadline=${1:-300}
# clocks, power and throttle reasons once a second during the benchmark: is a GEMM-bound run power-limited?
fields=timestamp,clocks.sm,clocks.mem,power.draw,power.limit,temperature.gpu,utilization.gpu
(nvidia-smi --query-gpu=$fields,clocks_event_reasons.active --format=csv -l 1 2>/dev/null \
    || nvidia-smi --query-gpu=$fields --format=csv -l 1) > "$out/gpu-clocks.csv" 2>/dev/null &
timeout $((deadline + 90)) python3 -m bench.gpu --deadline "$deadline" 2>&1 | tee "$out/gpu-bench.txt"
pkill -f "nvidia-smi --query-gpu=$fields" 2>/dev/null
date -u +"end %F %T UTC"
