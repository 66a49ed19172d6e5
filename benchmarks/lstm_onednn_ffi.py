"""jaxnets' LSTM op on XLA:CPU against oneDNN's (`jaxnets.layers.lstm_onednn`) and PyTorch's.

Checks that the oneDNN op gives the values and gradients of the XLA loop
(`jaxnets.layers.lstm_fused.lstm_sequence`) and times both, forward alone and
forward with backward, for the benchmark LSTM (128 units, 64 steps of 32
features, batch 64), with PyTorch's own LSTM in a separate process when it is
installed. Needs a C++17 compiler and ``pip install -e '.[onednn]'``.

Usage::

    python -m benchmarks.lstm_onednn_ffi             # about 30 s on 2 cores
    python -m benchmarks.lstm_onednn_ffi --rounds 5

Each row prints the median and the best of its rounds, in ms.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.layers import lstm_onednn
from jaxnets.layers.lstm_fused import lstm_sequence

T, B, F, U = 64, 64, 32, 128


def inputs(t=T, b=B, f=F, u=U, seed=0):
    """Random benchmark-shaped inputs ``(xs, h0, c0, kernel, rk, bias)``, float32.

    Args:
      t: time steps.
      b: batch.
      f: input features.
      u: units.
      seed: NumPy seed.

    Example:
      >>> [a.shape for a in inputs(2, 1, 3, 4)]
      [(2, 1, 3), (1, 4), (1, 4), (3, 16), (4, 16), (16,)]
    """
    r = np.random.default_rng(seed)
    shapes = [(t, b, f), (b, u), (b, u), (f, 4 * u), (u, 4 * u), (4 * u,)]
    scales = [1.0, 0.1, 0.1, 0.2, 0.1, 0.1]
    return tuple(jnp.asarray(r.normal(size=s) * k, jnp.float32) for s, k in zip(shapes, scales))


def loss_and_grads(fn):
    """Jitted ``value_and_grad`` of a fixed weighted sum of ``fn``'s outputs, for all six inputs.

    Args:
      fn: `lstm_sequence` of `jaxnets.layers.lstm_fused` or of `jaxnets.layers.lstm_onednn`.

    Example:
      >>> value, grads = loss_and_grads(lstm_sequence)(*inputs(2, 1, 3, 4))
      >>> len(grads)
      6
    """

    def loss(*args):
        hs, c_last = fn(*args)
        w = jnp.cos(jnp.arange(hs.size, dtype=hs.dtype)).reshape(hs.shape)
        return jnp.sum(hs * w) + jnp.sum(c_last * c_last)

    return jax.jit(jax.value_and_grad(loss, argnums=tuple(range(6))))


def _time(fn, args, n):
    jax.block_until_ready(fn(*args))
    t = time.perf_counter()
    for _ in range(n):
        jax.block_until_ready(fn(*args))
    return (time.perf_counter() - t) / n * 1e3


_TORCH = """
import time, torch
m = torch.nn.LSTM({f}, {u}); x = torch.randn({t}, {b}, {f})
def fwd():
    with torch.no_grad(): m(x)
def both():
    y, _ = m(x); y.sum().backward()
for name, fn in (("fwd", fwd), ("both", both)):
    fn(); best = []
    for _ in range({rounds}):
        t = time.perf_counter()
        for _ in range({n}): fn()
        best.append((time.perf_counter() - t) / {n} * 1e3)
    print(name, *best)
"""


def torch_times(rounds: int, n: int) -> dict | None:
    """PyTorch's LSTM forward (no gradients) and forward+backward in ms per round, or None.

    Run in a process of its own, without JAX's threads beside it.

    Args:
      rounds: timed rounds.
      n: calls per round.

    Example:
      >>> torch_times(1, 1) is None or set(torch_times(1, 1)) == {"fwd", "both"}
      True
    """
    code = _TORCH.format(t=T, b=B, f=F, u=U, rounds=rounds, n=n)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        return None
    rows = (line.split() for line in done.stdout.splitlines())
    return {row[0]: [float(v) for v in row[1:]] for row in rows}


def main(argv=None) -> dict:
    """Check oneDNN's LSTM against jaxnets' and print the timing table; returns it.

    Args:
      argv: command-line arguments (``--rounds``, ``--calls``).

    Example:
      >>> main(["--rounds", "1", "--calls", "2"])  # doctest: +SKIP
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=10, help="calls per round")
    args = ap.parse_args(argv)
    if (reason := lstm_onednn.unavailable_reason()) is not None:
        raise SystemExit(f"the oneDNN LSTM cannot run here: {reason}")
    x = inputs()
    xla, onednn = lstm_sequence, lstm_onednn.lstm_sequence
    grads = {"XLA loop": loss_and_grads(xla), "oneDNN": loss_and_grads(onednn)}
    fwds = {"XLA loop": jax.jit(xla), "oneDNN": jax.jit(onednn)}
    (va, ga), (vb, gb) = grads["XLA loop"](*x), grads["oneDNN"](*x)
    worst = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a))) for a, b in zip(ga, gb))
    print(
        f"loss {float(va):.6f} (XLA loop) {float(vb):.6f} (oneDNN); "
        f"largest gradient difference {worst:.1e} of the gradient's largest entry"
    )
    times: dict[str, list[float]] = {}
    for _ in range(args.rounds):  # interleaved, so drift hits every row alike
        for name in grads:
            times.setdefault(f"{name} forward", []).append(_time(fwds[name], x, args.calls))
            times.setdefault(f"{name} fwd+bwd", []).append(_time(grads[name], x, args.calls))
    torch = torch_times(args.rounds, args.calls)
    if torch:
        times["PyTorch forward (no grad)"] = torch["fwd"]
        times["PyTorch fwd+bwd"] = torch["both"]
    print(f"LSTM T={T} B={B} F={F} U={U}, ms per call ({args.rounds} rounds of {args.calls}):")
    for name, ts in times.items():
        print(f"  {name:28s} median {statistics.median(ts):6.2f}   best {min(ts):6.2f}")
    return {"max_rel_grad_diff": worst, "ms": times}


if __name__ == "__main__":
    main()
