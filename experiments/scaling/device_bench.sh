#!/bin/bash
# GPU, one device: the engines' per-step cost against the single-device engine, small and large MLP.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
for size in "1024 1024" "8192 4096"; do
  set -- $size
  timeout 120 python3 benchmarks/bench_scaling.py --platform gpu --engines local,jit,pmap --device-counts 1 \
    --per-device-batch $1 --hidden $2 --steps 200 --out "$OUT/bench_gpu_b$1_h$2.json" 2>&1 | grep -v "done$"
done
