#!/usr/bin/env bash
# The one prepared run for a lent GPU machine (device tool; it has torch, pytest, h5py, PyYAML, Pillow, no Hydra):
# the CUDA-only engine tests, then the GPU benchmark (bench/gpu.py, in order of value: the ResNet-56 and MLP
# targets, ResNet-50 at 224x224 with the ImageNet 60x60 projection, the curvature row, optional one-change rows).
# Outputs under $OUT (or bench/results/).
#   bash bench/device.sh [total seconds, default 540]
# The tests get at most 150 s; the benchmark's --deadline is what they leave less 60 s (a step starts only if
# its guessed cost fits), and it is killed 45 s after that: the whole ends inside `total`, inside one device
# call's 600 s. Its JSON is rewritten after every step. A rerun on the still-warm machine, in the minutes a
# 15-minute lease leaves (no tests; some parts only):
#   TESTS=0 ONLY=resnet50_224,curvature bash bench/device.sh 200
set -u
total=${1:-540}
out=${OUT:-bench/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
date -u +"start %F %T UTC"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
# --noconftest: tests/conftest.py imports the launch layer, which needs Hydra; the GPU tests use their own fixtures
[ "${TESTS:-1}" = 0 ] || timeout 150 python3 -m pytest -q -p no:cacheprovider --noconftest tests/test_engine.py -k gpu \
    2>&1 | tee "$out/gpu-tests.txt"
left=$((total - SECONDS))
# clocks, power and throttle reasons once a second during the benchmark: is a GEMM-bound run power-limited?
fields=timestamp,clocks.sm,clocks.mem,power.draw,power.limit,temperature.gpu,utilization.gpu
nvidia-smi --query-gpu=$fields,clocks_event_reasons.active --format=csv >/dev/null 2>&1 \
    && fields=$fields,clocks_event_reasons.active
nvidia-smi --query-gpu=$fields --format=csv -l 1 > "$out/gpu-clocks.csv" 2>/dev/null &
sampler=$!
timeout $((left - 15)) python3 -m bench.gpu --deadline $((left - 60)) ${ONLY:+--only "$ONLY"} 2>&1 \
    | tee "$out/gpu-bench.txt"
kill "$sampler" 2>/dev/null
date -u +"end %F %T UTC"
