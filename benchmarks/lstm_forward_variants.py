"""Why jaxnets' LSTM forward keeps one ``[x_t, h]`` product per step on XLA:CPU.

Times the forward loop of the benchmark LSTM (128 units, 64 steps of 32
features, batch 64) written five ways, each with XLA's default dots
(YNNPACK) and with Eigen's:

* ``concat``: one product per step on ``[x_t, h]`` (what
  `jaxnets.layers.lstm_fused` does);
* ``hoisted``: the input projection of all steps as one product before the
  loop, the per-step product on ``h`` only (what PyTorch's oneDNN LSTM does);
* ``hoisted+carry``: the same, with the next step's projection passed
  through the loop's carry, so the gate fusions read a plain array rather than
  a slice of the stacked projection;
* ``no-input``: the loop without any input term, a floor for every hoisted
  form (add the projection's own time to it);
* ``feature-major``: ``h`` kept as ``(units, batch)``, gates as row blocks.

Usage::

    python -m benchmarks.lstm_forward_variants            # about a minute on 2 cores
    python -m benchmarks.lstm_forward_variants --rounds 3

The variants are compiled first, then timed in turn, round after round; each
row prints the median and the best of its rounds in ms per forward pass.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
from jax import lax

from jaxnets.cpu_dots import options as dot_options

T, B, F, U = 64, 64, 32, 128


def _gates_to_state(i, f, g, o, c):
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c


def _split(gates, axis):
    return jnp.split(gates, 4, axis=axis)


def concat(xs, h0, c0, kernel, rk, bias):
    w = jnp.concatenate([kernel, rk], axis=0)

    def step(carry, x):
        h, c = carry
        h, c = _gates_to_state(*_split(jnp.concatenate([x, h], -1) @ w + bias, 1), c)
        return (h, c), h

    return lax.scan(step, (h0, c0), xs)[1]


def _projection(xs, kernel, bias):
    return (xs.reshape(T * B, F) @ kernel + bias).reshape(T, B, 4 * U)


def hoisted(xs, h0, c0, kernel, rk, bias):
    def step(carry, p):
        h, c = carry
        h, c = _gates_to_state(*_split(p + h @ rk, 1), c)
        return (h, c), h

    return lax.scan(step, (h0, c0), _projection(xs, kernel, bias))[1]


def hoisted_carry(xs, h0, c0, kernel, rk, bias):
    p_all = _projection(xs, kernel, bias)
    p_next = jnp.concatenate([p_all[1:], p_all[:1]], axis=0)

    def step(carry, pn):
        h, c, p = carry
        h, c = _gates_to_state(*_split(p + h @ rk, 1), c)
        return (h, c, pn), h

    return lax.scan(step, (h0, c0, p_all[0]), p_next)[1]


def no_input(xs, h0, c0, kernel, rk, bias):
    def step(carry, _):
        h, c = carry
        h, c = _gates_to_state(*_split(h @ rk, 1), c)
        return (h, c), h

    return lax.scan(step, (h0, c0), xs)[1]


def feature_major(xs, h0, c0, kernel, rk, bias):
    w = jnp.concatenate([kernel, rk], axis=0).T  # (4U, F + U)

    def step(carry, x):
        h, c = carry
        gates = w @ jnp.concatenate([x, h], 0) + bias[:, None]
        h, c = _gates_to_state(*_split(gates, 0), c)
        return (h, c), h

    hs = lax.scan(step, (h0.T, c0.T), jnp.swapaxes(xs, 1, 2))[1]
    return jnp.swapaxes(hs, 1, 2)


VARIANTS = {
    "concat": concat,
    "hoisted": hoisted,
    "hoisted+carry": hoisted_carry,
    "no-input": no_input,
    "feature-major": feature_major,
}


def _time_ms(fn, args, budget_s=0.2):
    jax.block_until_ready(fn(*args))
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < budget_s:
        out = fn(*args)
        n += 1
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / n * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    keys = jax.random.split(jax.random.key(0), 3)
    inputs = (
        jax.random.normal(keys[0], (T, B, F)),
        jnp.zeros((B, U)),
        jnp.zeros((B, U)),
        jax.random.normal(keys[1], (F, 4 * U)) * 0.1,
        jax.random.normal(keys[2], (U, 4 * U)) * 0.1,
        jnp.zeros(4 * U),
    )
    compiled = {}
    for name, fn in VARIANTS.items():
        lowered = jax.jit(fn).lower(*inputs)
        for dots in ("xla", "eigen"):
            compiled[name, dots] = lowered.compile(compiler_options=dot_options(dots) or None)
    times = {row: [] for row in compiled}
    for _ in range(args.rounds):
        for row, fn in compiled.items():
            times[row].append(_time_ms(fn, inputs))
    print(f"LSTM forward, {T} steps, batch {B}, {F} -> {U} units (ms per pass)")
    print(f"{'variant':<15} {'dots':<6} {'median':>7} {'best':>7}")
    for (name, dots), values in times.items():
        label = "ynnpack" if dots == "xla" else dots
        print(f"{name:<15} {label:<6} {statistics.median(values):7.2f} {min(values):7.2f}")


if __name__ == "__main__":
    main()
