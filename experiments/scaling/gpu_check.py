"""On a real accelerator: every engine gives the single-device parameters (MLP, CNN + BatchNorm).

  python experiments/scaling/gpu_check.py

Trains 20 steps with the default engine, the jit engine, the pmap engine and
the jit engine with 4 microbatches on every visible device, and prints the
largest parameter difference to the single-device run. Float32 matmuls use
full precision (``jax_default_matmul_precision='highest'``) so that TF32 on
GPUs does not blur the comparison.
"""

import argparse
import json
import sys

import flax.linen as nn
import jax
import numpy as np

from jaxnets.layers import BatchNormalization
from jaxnets.parallel import PmapEngine, ShardedEngine
from jaxnets.training import create_train_state, fit

jax.config.update("jax_default_matmul_precision", "highest")


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(3)(nn.relu(nn.Dense(32)(x)))


class CNN(nn.Module):
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(8, (3, 3), use_bias=False)(x)
        x = BatchNormalization(axis_name=self.axis_name)(x, train=train)
        return nn.Dense(3)(nn.relu(x).mean(axis=(1, 2)))


def run(module, x, y, engine):
    state = create_train_state(module, "adam", x[:1], learning_rate=0.01, seed=0)
    state, _ = fit(state, (x, y), batch_size=32, verbose=0, engine=engine, seed=1)
    return jax.device_get(state.params)


def max_diff(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main():
    rng = np.random.default_rng(0)
    n = jax.device_count()
    results = {"devices": [str(d) for d in jax.devices()], "checks": {}}
    mlp_data = rng.normal(size=(640, 6)).astype(np.float32), rng.integers(0, 3, 640)
    cnn_data = rng.normal(size=(640, 8, 8, 1)).astype(np.float32), rng.integers(0, 3, 640)
    for name, make, (x, y) in (("mlp", lambda ax: MLP(), mlp_data), ("cnn_bn", CNN, cnn_data)):
        ref = run(make(None), x, y, None)
        engines = {
            "jit": (ShardedEngine(devices=n), None),
            "pmap": (PmapEngine(devices=n), PmapEngine.axis_name),
            "jit_accumulate4": (ShardedEngine(devices=n, accumulate=4), None),
        }
        for label, (engine, axis) in engines.items():
            if name == "cnn_bn" and label == "jit_accumulate4":
                continue  # microbatches have their own BatchNorm statistics
            diff = max_diff(run(make(axis), x, y, engine), ref)
            results["checks"][f"{name}/{label}"] = diff
            print(f"{name:7s} {label:16s} max |param - single device| = {diff:.2e}")
    print(json.dumps(results))
    return 0 if max(results["checks"].values()) < 1e-5 else 1


if __name__ == "__main__":
    # No options; `--help` prints the description instead of starting the check.
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    sys.exit(main())
