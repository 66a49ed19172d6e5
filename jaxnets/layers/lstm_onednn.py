"""The LSTM of `jaxnets.layers.lstm_fused` run by oneDNN's LSTM primitive (CPU, optional).

PyTorch's CPU LSTM runs oneDNN's forward-training and backward primitives, which
keep a whole sequence in one call; XLA:CPU runs an LSTM as a loop of small
programs, one per time step. On the benchmark LSTM (128 units, 64 steps of 32
features, batch 64; 2 cores) the op's forward and backward took 9.3 ms against
14.4 ms for jaxnets' XLA loop (best of 5 rounds, `benchmarks/lstm_onednn_ffi.py`),
and the fused training step went from 79 to 134-152 steps/s.

`jaxnets.layers.LSTM` uses it by itself when everything below holds, and the
XLA loop otherwise (`usable` says which):

* the `onednn` extra is installed (``pip install 'jaxnets[onednn]'``: oneDNN's
  CPU build from PyPI) and a C++17 compiler is on ``PATH``: the handlers
  (``lstm_onednn.cc``, `jax.ffi`) are built on first use into jaxnets' cache
  folder, once per source and oneDNN;
* JAX runs on the CPU, all inputs are float32, and there is no mask;
* ``JAXNETS_ONEDNN`` is not ``off``.

Values and gradients equal the XLA loop's to float rounding (oneDNN sums in
another order). The forward pass hands the backward a workspace (~40 MB for
the benchmark LSTM) as an ordinary array, so `jax.vjp`, `jax.checkpoint` and
`jax.vmap` (one call per member) work as for any JAX function.

Example:
  >>> import jax.numpy as jnp
  >>> xs = jnp.ones((5, 2, 3))  # (time, batch, features)
  >>> h0 = c0 = jnp.zeros((2, 4))
  >>> kernel, rk, bias = jnp.ones((3, 16)) * 0.1, jnp.zeros((4, 16)), jnp.zeros(16)
  >>> if usable(xs, h0, c0, kernel, rk, bias, None):
  ...     hs, c = lstm_sequence(xs, h0, c0, kernel, rk, bias)
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import jax
import jax.numpy as jnp

ENV_VAR = "JAXNETS_ONEDNN"
SOURCE = Path(__file__).with_name("lstm_onednn.cc")
_FORWARD, _BACKWARD = "JaxnetsLstmForward", "JaxnetsLstmBackward"
_LOCK = threading.Lock()  # one build and one registration, whichever thread traces first


def enabled() -> bool:
    """False when ``JAXNETS_ONEDNN`` says off.

    Example:
      >>> isinstance(enabled(), bool)
      True
    """
    return os.environ.get(ENV_VAR, "on").strip().lower() not in ("0", "off", "false", "no")


def onednn_prefix() -> Path:
    """Where oneDNN's ``include/`` and ``lib/`` are: ``$ONEDNN_ROOT``, else this Python's prefix.

    The ``onednn-cpu-gomp`` wheels install there.

    Example:
      >>> onednn_prefix().is_dir()
      True
    """
    return Path(os.environ.get("ONEDNN_ROOT", sys.prefix))


def _build_dir() -> Path:
    from jaxnets.compile_cache import default_cache_dir

    cache = default_cache_dir()
    if cache is not None:
        return Path(cache).parent / "kernels"
    return Path(tempfile.gettempdir()) / f"jaxnets-kernels-{os.getuid()}"


def build(out_dir: str | os.PathLike | None = None) -> Path:
    """Compiles the handlers into a shared library, once per source and oneDNN; returns its path.

    Args:
      out_dir: folder for the library (default: ``kernels`` beside jaxnets'
        compile cache, or a per-user temporary folder when the cache is off).

    Raises:
      RuntimeError: naming what is missing (a C++ compiler, oneDNN's headers)
        or the compiler's error.

    Example:
      >>> build().suffix  # doctest: +SKIP
      '.so'
    """
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        raise RuntimeError("the oneDNN LSTM needs a C++ compiler (g++) on PATH; none found")
    prefix = onednn_prefix()
    if not (prefix / "include" / "oneapi" / "dnnl" / "dnnl.hpp").is_file():
        raise RuntimeError(
            f"no oneDNN headers under {prefix}/include: pip install 'jaxnets[onednn]' "
            "(or set ONEDNN_ROOT to a oneDNN 3 installation)"
        )
    key = SOURCE.read_bytes() + f"{prefix}|{cxx}|{jax.ffi.include_dir()}".encode()
    lib = Path(out_dir or _build_dir()) / f"lstm_onednn_{hashlib.sha256(key).hexdigest()[:16]}.so"
    if lib.is_file():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    tmp = lib.with_suffix(f".{os.getpid()}.tmp")
    cmd = [cxx, "-O2", "-shared", "-fPIC", "-std=c++17", "-w", "-pthread"]
    cmd += [f"-I{jax.ffi.include_dir()}", f"-I{prefix / 'include'}", str(SOURCE)]
    cmd += [f"-L{prefix / 'lib'}", "-ldnnl", f"-Wl,-rpath,{prefix / 'lib'}", "-o", str(tmp)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(
            f"building the oneDNN LSTM failed: {' '.join(cmd)}\n{done.stderr[-2000:]}"
        )
    tmp.replace(lib)  # atomic: a concurrent build never loads a half-written file
    return lib


def _library() -> ctypes.CDLL | str:
    """The loaded and registered library, or why there is none (built at most once a process)."""
    if not enabled():
        return f"{ENV_VAR} is off"
    with _LOCK:
        return _load()


@functools.cache
def _load() -> ctypes.CDLL | str:
    try:
        lib = ctypes.CDLL(str(build()))
    except (RuntimeError, OSError) as e:
        return str(e)
    lib.jaxnets_lstm_workspace_bytes.restype = ctypes.c_int64
    lib.jaxnets_lstm_workspace_bytes.argtypes = [ctypes.c_int64] * 4
    for name in (_FORWARD, _BACKWARD):
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")
    return lib


def unavailable_reason() -> str | None:
    """None when the oneDNN LSTM can run in this process, else why not (building it if needed).

    Example:
      >>> reason = unavailable_reason()
      >>> reason is None or isinstance(reason, str)
      True
    """
    lib = _library()
    return lib if isinstance(lib, str) else None


def usable(xs, h0, c0, kernel, rk, bias, mask) -> bool:
    """Whether `lstm_sequence` can replace the XLA loop for these arguments.

    Args:
      xs, h0, c0, kernel, rk, bias, mask: the arguments of
        `jaxnets.layers.lstm_fused.lstm_sequence` (arrays or tracers).

    Example:
      >>> import jax.numpy as jnp
      >>> z = jnp.zeros((2, 4))
      >>> usable(jnp.zeros((3, 2, 1), jnp.bfloat16), z, z, jnp.zeros((1, 16)), jnp.zeros((4, 16)), None, None)
      False
    """
    if mask is not None or jax.default_backend() != "cpu":
        return False
    arrays = (xs, h0, c0, kernel, rk) + (() if bias is None else (bias,))
    if any(jnp.result_type(a) != jnp.float32 for a in arrays):
        return False
    return unavailable_reason() is None


def _forward(xs, h0, c0, kernel, rk, bias):
    t, b, f = xs.shape
    u = h0.shape[1]
    size = _library().jaxnets_lstm_workspace_bytes(t, b, f, u)
    if size < 0:
        raise ValueError(f"oneDNN has no LSTM for {t} steps, batch {b}, {f} inputs, {u} units")
    outs = (
        jax.ShapeDtypeStruct((t, b, u), jnp.float32),
        jax.ShapeDtypeStruct((b, u), jnp.float32),
        jax.ShapeDtypeStruct((size,), jnp.uint8),
    )
    return jax.ffi.ffi_call(_FORWARD, outs, vmap_method="sequential")(xs, h0, c0, kernel, rk, bias)


@jax.custom_vjp
def _sequence(xs, h0, c0, kernel, rk, bias):
    hs, c_last, _ = _forward(xs, h0, c0, kernel, rk, bias)
    return hs, c_last


def _fwd(xs, h0, c0, kernel, rk, bias):
    hs, c_last, workspace = _forward(xs, h0, c0, kernel, rk, bias)
    return (hs, c_last), (xs, h0, c0, kernel, rk, bias, hs, c_last, workspace)


def _bwd(res, cotangents):
    outs = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in res[:6])
    call = jax.ffi.ffi_call(_BACKWARD, outs, vmap_method="sequential")
    return tuple(call(*res, *cotangents))


_sequence.defvjp(_fwd, _bwd)


def lstm_sequence(xs, h0, c0, kernel, rk, bias=None):
    """`jaxnets.layers.lstm_fused.lstm_sequence` without a mask, run by oneDNN.

    Check `usable` first: this raises if oneDNN cannot run here.

    Args:
      xs: inputs, time-major (T, B, F), float32.
      h0: initial hidden state (B, U).
      c0: initial cell state (B, U).
      kernel: input weights (F, 4U), gates i, f, c, o as in Keras.
      rk: recurrent weights (U, 4U).
      bias: (4U,) or None.

    Returns:
      ``(hs, c_T)``: the hidden state of every step (T, B, U) and the last cell state (B, U).

    Example:
      >>> import jax.numpy as jnp
      >>> xs, z = jnp.ones((5, 2, 3)), jnp.zeros((2, 4))
      >>> k, rk = jnp.ones((3, 16)) * 0.1, jnp.zeros((4, 16))
      >>> hs, c = lstm_sequence(xs, z, z, k, rk) if usable(xs, z, z, k, rk, None, None) else (xs, z)
    """
    if (reason := unavailable_reason()) is not None:
        raise RuntimeError(f"the oneDNN LSTM cannot run here: {reason}")
    if bias is None:
        bias = jnp.zeros(kernel.shape[1], jnp.float32)
    return _sequence(xs, h0, c0, kernel, rk, bias)
