"""oneDNN's LSTM (the kernel PyTorch's CPU LSTM runs) inside a jitted JAX program.

Builds ``lstm_onednn_ffi.cc`` (oneDNN's LSTM forward-training and backward
primitives as XLA FFI handlers), wraps them in a ``custom_vjp`` with the
signature of `jaxnets.layers.lstm_fused.lstm_sequence`, checks the values and
gradients against it, and times both for the benchmark LSTM (128 units, 64
steps of 32 features, batch 64), with PyTorch's own LSTM in a separate process
when it is installed.

It answers whether jaxnets could close the LSTM gap to PyTorch (issue 7) by
calling oneDNN through ``jax.ffi``. The oneDNN that installs light from PyPI is
the CPU-only build with GNU OpenMP (``onednn-cpu-gomp``, oneDNN 3.2, 39 MB);
newer oneDNN wheels (2024.0 on) are SYCL builds that pull ~1.8 GB of SYCL and
OpenCL runtimes. Needs a C++17 compiler and::

    pip install onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0

Usage::

    python -m benchmarks.lstm_onednn_ffi             # about 30 s on 2 cores
    python -m benchmarks.lstm_onednn_ffi --rounds 5

Each row prints the median and the best of its rounds, in ms.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.layers.lstm_fused import lstm_sequence

T, B, F, U = 64, 64, 32, 128
SOURCE = Path(__file__).with_name("lstm_onednn_ffi.cc")


def onednn_prefix() -> Path:
    """Where oneDNN's ``include/`` and ``lib/`` are: ``$ONEDNN_ROOT``, else this Python's prefix.

    Example:
      >>> onednn_prefix().is_dir()
      True
    """
    return Path(os.environ.get("ONEDNN_ROOT", sys.prefix))


def build(out_dir: str | os.PathLike | None = None) -> Path:
    """Compile the FFI handlers into a shared library (once per source) and return its path.

    Args:
      out_dir: folder for the library; a per-user temporary folder by default.

    Raises RuntimeError naming what is missing: a C++ compiler or oneDNN's headers.

    Example:
      >>> build().suffix  # doctest: +SKIP
      '.so'
    """
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        raise RuntimeError("building the oneDNN LSTM needs a C++ compiler (g++); none on PATH")
    prefix = onednn_prefix()
    if not (prefix / "include" / "oneapi" / "dnnl" / "dnnl.hpp").is_file():
        raise RuntimeError(
            f"no oneDNN headers under {prefix}/include: pip install "
            "onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0 (or set ONEDNN_ROOT)"
        )
    digest = hashlib.sha256(SOURCE.read_bytes() + str(prefix).encode()).hexdigest()[:12]
    out = Path(out_dir or Path(tempfile.gettempdir()) / f"jaxnets-ffi-{os.getuid()}")
    lib = out / f"lstm_onednn_{digest}.so"
    if lib.is_file():
        return lib
    out.mkdir(parents=True, exist_ok=True)
    tmp = lib.with_suffix(f".{os.getpid()}.tmp")
    cmd = [cxx, "-O2", "-shared", "-fPIC", "-std=c++17", "-w"]
    cmd += [f"-I{jax.ffi.include_dir()}", f"-I{prefix / 'include'}", str(SOURCE)]
    cmd += [f"-L{prefix / 'lib'}", "-ldnnl", f"-Wl,-rpath,{prefix / 'lib'}", "-o", str(tmp)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    tmp.replace(lib)  # atomic: a concurrent build never loads a half-written file
    return lib


_LIB: ctypes.CDLL | None = None


def load() -> ctypes.CDLL:
    """Build (if needed), load and register the handlers with XLA; returns the library.

    Example:
      >>> load().jaxnets_lstm_workspace_bytes(2, 1, 3, 4) > 0  # doctest: +SKIP
      True
    """
    global _LIB
    if _LIB is None:
        lib = ctypes.CDLL(str(build()))
        lib.jaxnets_lstm_workspace_bytes.restype = ctypes.c_int64
        lib.jaxnets_lstm_workspace_bytes.argtypes = [ctypes.c_int64] * 4
        for name in ("JaxnetsLstmForward", "JaxnetsLstmBackward"):
            fn = jax.ffi.pycapsule(getattr(lib, name))
            jax.ffi.register_ffi_target(name, fn, platform="cpu")
        _LIB = lib
    return _LIB


def _forward(xs, h0, c0, kernel, rk, bias):
    t, b, f = xs.shape
    u = h0.shape[1]
    size = load().jaxnets_lstm_workspace_bytes(t, b, f, u)
    if size < 0:
        raise RuntimeError(f"oneDNN has no LSTM for T={t}, B={b}, F={f}, U={u}")
    outs = (
        jax.ShapeDtypeStruct((t, b, u), jnp.float32),
        jax.ShapeDtypeStruct((b, u), jnp.float32),
        jax.ShapeDtypeStruct((size,), jnp.uint8),
    )
    call = jax.ffi.ffi_call("JaxnetsLstmForward", outs, vmap_method="sequential")
    return call(xs, h0, c0, kernel, rk, bias)


@jax.custom_vjp
def lstm_onednn(xs, h0, c0, kernel, rk, bias):
    """`lstm_sequence` (float32, no mask) run by oneDNN: ``(hs (T, B, U), c_T (B, U))``.

    Args:
      xs: inputs, time-major (T, B, F).
      h0: initial hidden state (B, U).
      c0: initial cell state (B, U).
      kernel: input weights (F, 4U), gates i, f, c, o.
      rk: recurrent weights (U, 4U).
      bias: (4U,).

    Example:
      >>> hs, c = lstm_onednn(xs, h0, c0, kernel, rk, bias)  # doctest: +SKIP
    """
    hs, c_last, _ = _forward(xs, h0, c0, kernel, rk, bias)
    return hs, c_last


def _fwd(xs, h0, c0, kernel, rk, bias):
    hs, c_last, ws = _forward(xs, h0, c0, kernel, rk, bias)
    return (hs, c_last), (xs, h0, c0, kernel, rk, bias, hs, c_last, ws)


def _bwd(res, cotangents):
    outs = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in res[:6])
    call = jax.ffi.ffi_call("JaxnetsLstmBackward", outs, vmap_method="sequential")
    return tuple(call(*res, *cotangents))


lstm_onednn.defvjp(_fwd, _bwd)


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
      fn: `lstm_sequence` or `lstm_onednn`.

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
    x = inputs()
    grads = {"jaxnets": loss_and_grads(lstm_sequence), "oneDNN": loss_and_grads(lstm_onednn)}
    fwds = {"jaxnets": jax.jit(lstm_sequence), "oneDNN": jax.jit(lstm_onednn)}
    (va, ga), (vb, gb) = grads["jaxnets"](*x), grads["oneDNN"](*x)
    worst = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a))) for a, b in zip(ga, gb))
    print(
        f"loss {float(va):.6f} (jaxnets) {float(vb):.6f} (oneDNN); "
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
