"""Population throughput: N small MLPs as one vmapped population vs N sequential fits.

The member is an MLP 64-32-10 (the digits size) with batch 32: a model small
enough that a sequential fit is bound by per-step overhead, which is the case
populations are for. Throughput is member-steps per second; "sequential" runs
``fit`` once per member (per-step and fused), so its rate does not depend on N.
Each rate is the best of ``rounds`` runs (5: on a 2-core machine one run of a
~20 ms population or a ~10 ms fit moves by 20% with the load). The clock starts
once the members' initial states are computed (their init programs run
asynchronously), for the sequential fits and the populations alike.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from jaxnets import models
from jaxnets.population import fit_population
from jaxnets.training import create_train_state, fit

BATCH, FEATURES = 32, 64


def make(seed: int, x):
    module = models.get("mlp_784_128_10", features=(32,), input_shape=(FEATURES,))
    return create_train_state(module, "adam", x[:1], seed=seed, metrics=("accuracy",))


def run(sizes=(1, 4, 16, 64), steps: int = 50, epochs: int = 2, rounds: int = 5) -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * steps, FEATURES)).astype(np.float32)
    y = rng.integers(0, 10, len(x)).astype(np.int32)
    out = {"member": "MLP 64-32-10, batch 32", "steps_per_epoch": steps, "epochs": epochs}

    def sequential(fuse, n=4):
        fit(make(0, x), (x, y), epochs=epochs, batch_size=BATCH, verbose=0, fuse=fuse)  # compile
        best = 0.0
        for _ in range(rounds):
            states = jax.block_until_ready([make(s, x) for s in range(n)])
            start = time.perf_counter()
            for s, state in enumerate(states):
                fit(state, (x, y), epochs=epochs, batch_size=BATCH, seed=s, verbose=0, fuse=fuse)
            best = max(best, n * steps * epochs / (time.perf_counter() - start))
        return best

    out["sequential_fit"] = sequential(None)
    out["sequential_fused"] = sequential("epoch")
    out["population"] = {}
    for n in sizes:
        warm = [make(s, x) for s in range(n)]
        fit_population(warm, (x, y), epochs=1, batch_size=BATCH, verbose=0)  # compiles
        best = 0.0
        for _ in range(rounds):
            states = jax.block_until_ready([make(s, x) for s in range(n)])
            start = time.perf_counter()
            fit_population(states, (x, y), epochs=epochs, batch_size=BATCH, verbose=0)
            best = max(best, n * steps * epochs / (time.perf_counter() - start))
        out["population"][n] = best
    return out
