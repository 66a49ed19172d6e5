"""CPU training-step throughput of jaxnets layers against plain Flax.

Measures steps/s of a full Adam training step (forward, backward, update):

* the small CNN Conv(32, 3x3, relu)-MaxPool2-Conv(64, 3x3, relu)-MaxPool2-
  Flatten-Dense(10) on 28x28x1 images, batch 128: Flax ``nn.Conv`` +
  ``nn.max_pool``, then jaxnets with ``impl='xla'`` and ``impl='im2col'``,
  and the zoo `jaxnets.models.CNN` (each conv-ReLU-pool block one product
  over only the outputs its pool reads), each jitted per step and inside
  `lax.scan` (several steps per call);
* an LSTM (128 units, 64 steps, 32 features, batch 64): Flax
  ``nn.RNN(nn.OptimizedLSTMCell)`` against jaxnets ``LSTM`` as the fused
  whole-sequence op (``fused=True``, hand-written backward, the CPU default),
  as the `lax.scan` with the projection in the loop (``fused=False``) and with
  it hoisted (``hoist_input=True``), each at unroll 1/2/4/8.

Usage::

    python benchmarks/bench_layers.py            # about 4-5 minutes on 2 cores
    python benchmarks/bench_layers.py --quick    # smoke run: 4 rows, tiny shapes

Numbers are noisy on a shared machine: the rows of a table are compiled
first and then timed in turn, round after round (A, B, A, B...), and each row
reports the median and the best of its rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxnets import layers, models


class FlaxCNN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.max_pool(nn.relu(nn.Conv(32, (3, 3), padding="VALID")(x)), (2, 2), (2, 2))
        x = nn.max_pool(nn.relu(nn.Conv(64, (3, 3), padding="VALID")(x)), (2, 2), (2, 2))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


class JaxnetsCNN(nn.Module):
    impl: str = "auto"

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = layers.Conv2D(32, 3, activation="relu", impl=self.impl)(x)
        x = layers.MaxPooling2D(2, impl=self.impl)(x)
        x = layers.Conv2D(64, 3, activation="relu", impl=self.impl)(x)
        x = layers.MaxPooling2D(2, impl=self.impl)(x)
        return layers.Dense(10)(layers.Flatten()(x))


class FlaxLSTM(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.RNN(nn.OptimizedLSTMCell(128))(x)[:, -1]
        return nn.Dense(1)(h)


class JaxnetsLSTM(nn.Module):
    unroll: int = 1
    hoist: bool = False
    fused: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        lstm = layers.LSTM(128, unroll=self.unroll, hoist_input=self.hoist, fused=self.fused)
        return layers.Dense(1)(lstm(x))


def make_step(model, tx, loss_fn):
    """A pure Adam training step ``(params, opt_state, x, y) -> (params, opt_state, loss)``."""

    def step(carry, batch):
        params, opt_state = carry
        x, y = batch
        loss, grads = jax.value_and_grad(lambda p: loss_fn(model.apply(p, x), y))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return step


def xent(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def mse(pred, y):
    return jnp.mean((pred[:, 0] - y) ** 2)


def prepare(model, x, y, loss_fn, *, scan: int):
    """Compiles and warms up a training loop; returns ``(run, steps per call, compile s)``."""
    params = model.init(jax.random.key(0), x)
    tx = optax.adam(1e-3)
    step = make_step(model, tx, loss_fn)
    if scan:
        xs = jnp.broadcast_to(x, (scan, *x.shape))
        ys = jnp.broadcast_to(y, (scan, *y.shape))
        fn = jax.jit(lambda c: lax.scan(step, c, (xs, ys)))
    else:
        fn = jax.jit(lambda c: step(c, (x, y)))
    box = {"carry": (params, tx.init(params))}

    def run():
        box["carry"], loss = fn(box["carry"])
        return loss

    t0 = time.perf_counter()
    jax.block_until_ready(run())  # compile and warm up
    return run, max(scan, 1), time.perf_counter() - t0


def measure_table(rows, x, y, loss_fn, *, seconds: float, repeats: int):
    """Prints each ``(name, mode, model, scan)`` row's median and best steps/s over
    ``repeats`` rounds of ~``seconds`` windows, the rows timed in turn each round."""
    prepared = [(name, mode, *prepare(m, x, y, loss_fn, scan=n)) for name, mode, m, n in rows]
    rates = [[] for _ in rows]
    for _ in range(repeats):
        for (_, _, run, per_call, _), out in zip(prepared, rates, strict=True):
            n, start = 0, time.perf_counter()
            while True:
                jax.block_until_ready(run())
                n += per_call
                elapsed = time.perf_counter() - start
                if elapsed >= seconds:
                    break
            out.append(n / elapsed)
    for (name, mode, _, _, comp), r in zip(prepared, rates, strict=True):
        med, best = statistics.median(r), max(r)
        print(f"{name:<44} {mode:<10} {med:>8.1f} {best:>8.1f} {comp:>9.1f}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (a few seconds)")
    args = parser.parse_args(argv)
    seconds, repeats, scan = (0.02, 1, 2) if args.quick else (1.0, 5, 20)
    # XLA's convolution inside scan is very slow on CPU (~0.3 steps/s): give
    # it a short scan so the run stays within minutes, and skip it in --quick.
    slow_scan = 4

    key = jax.random.key(0)
    # --quick shrinks batch and sequence length: it checks that everything
    # runs, and its numbers mean little.
    batch, steps = (8, 8) if args.quick else (128, 64)
    img = jax.random.normal(key, (batch, 28, 28, 1))
    labels = jax.random.randint(key, (batch,), 0, 10)
    seq = jax.random.normal(key, (batch // 2, steps, 32))
    target = jax.random.normal(key, (batch // 2,))

    rows = [
        ("CNN flax nn.Conv + nn.max_pool", "jit", FlaxCNN(), 0),
        ("CNN jaxnets impl=xla", "jit", JaxnetsCNN("xla"), 0),
        ("CNN jaxnets impl=im2col", "jit", JaxnetsCNN("im2col"), 0),
        ("CNN jaxnets impl=xla", f"scan x{slow_scan}", JaxnetsCNN("xla"), slow_scan),
        ("CNN jaxnets impl=im2col", f"scan x{scan}", JaxnetsCNN("im2col"), scan),
        # The zoo CNN: each conv-ReLU-pool is one product over the outputs the pool reads.
        ("CNN jaxnets zoo CNN (conv+pool fused)", "jit", models.CNN(), 0),
        ("CNN jaxnets zoo CNN (conv+pool fused)", f"scan x{scan}", models.CNN(), scan),
    ]
    lstm_rows = [("LSTM flax nn.RNN(OptimizedLSTMCell)", "jit", FlaxLSTM(), 0)]
    for label, kw in (
        ("fused (custom_vjp)", dict(fused=True)),
        ("scan, in-loop input", dict()),
        ("scan, hoisted input", dict(hoist=True)),
    ):
        for unroll in (1, 2, 4, 8):
            model = JaxnetsLSTM(unroll, **kw)
            lstm_rows.append((f"LSTM jaxnets {label}, unroll={unroll}", "jit", model, 0))
    if args.quick:
        # Smoke run: one row per code path (xla, im2col and the zoo CNN in scan, fused
        # and scan LSTM).
        rows = [rows[1], rows[4], rows[6]]
        lstm_rows = [lstm_rows[1], lstm_rows[9]]
    print(f"backend={jax.default_backend()} devices={jax.device_count()} quick={args.quick}")
    print(f"CNN batch {batch} 28x28x1, LSTM batch {batch // 2} x {steps} steps x 32 features")
    print(f"{'model':<44} {'mode':<10} {'median':>8} {'best':>8} {'compile s':>9}  (steps/s)")
    print("-" * 84)
    measure_table(rows, img, labels, xent, seconds=seconds, repeats=repeats)
    measure_table(lstm_rows, seq, target, mse, seconds=seconds, repeats=repeats)


if __name__ == "__main__":
    main()
