#!/bin/bash
# One device session: versions, engine agreement on the GPU, GPU and 16-core CPU benchmarks,
# and the parallel tests under the machine's JAX (fake CPU devices). Results land in $OUT.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
echo "== engines agree on the GPU"
timeout 100 python3 experiments/scaling/gpu_check.py 2>&1 | tee "$OUT/gpu_check.log" | grep -v '^{'
echo "== GPU benchmark (1 device)"
timeout 110 python3 benchmarks/bench_scaling.py --platform gpu --device-counts 1 --per-device-batch 1024 \
  --hidden 1024 --steps 100 --out "$OUT/bench_gpu.json" 2>&1 | grep -v "done$"
echo "== CPU benchmark, fake devices on $(nproc) cores"
timeout 150 python3 benchmarks/bench_scaling.py --repeats 3 --out "$OUT/bench_cpu16.json" 2>&1 | grep -v "done$"
echo "== parallel tests on CPU with this JAX"
JAX_PLATFORMS=cpu timeout 200 python3 -m pytest -q -p no:cacheprovider -x tests/test_parallel_engines.py \
  tests/test_parallel_distributed.py tests/test_parallel_launch.py jaxnets/parallel 2>&1 | tail -15
