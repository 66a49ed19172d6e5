"""Reusing host memory between calls of a compiled step on CPU.

XLA:CPU gives each call of a program one block for all its temporaries. glibc
serves a block over 32 MiB with a fresh ``mmap`` and unmaps it when freed, so
every call faults its whole working set back in, page by page: for the
reference CNN (80 MB of temporaries at batch 128) that is about 20,000 page
faults, some 20 ms of a 45 ms step, and the Transformer loses as much. A fused
epoch pays it once per epoch, a per-step loop once per step.

Two settings remove it, applied on the CPU to the programs a loop calls once
per step (`jaxnets.compile.GuardedStep` with ``reuse_memory=True``: the
per-step training step, and a fused epoch run in short chunks):

* XLA splits the temporaries into heaps of at most `HEAP_BYTES`
  (``xla_multiheap_size_constraint_per_heap``, a per-program compiler option;
  raised to the largest single value of the program, so nothing needs a heap
  of its own);
* glibc keeps blocks below `MMAP_BYTES` in its heap and does not hand freed
  memory below 1 GiB back to the system (``mallopt``, process-wide, once), so
  the next call reuses the same pages. A program whose largest value needs a
  bigger heap raises that threshold to fit it (glibc 2.36 takes values above
  its automatic 32 MiB cap): the oneDNN LSTM's workspace
  (`jaxnets.layers.lstm_onednn`) is ~40 MB for the benchmark LSTM, and
  faulting it in took ~16 ms a call.

The costs: the process keeps up to that much freed memory mapped, as a
caching allocator does; and XLA cannot serialize an executable whose
temporaries span several heaps, so such a program is compiled in every new
process instead of coming from the persistent cache (about a second for the
CNN, repaid after ~70 steps). A whole fused epoch is called once per epoch and
keeps the single heap. ``JAXNETS_CPU_MEMORY=off`` turns both off. Results do
not change: only where buffers live.

Example:
  >>> import jax, jax.numpy as jnp
  >>> traced = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x)).trace(jnp.ones((512, 512)))
  >>> largest_value_bytes(traced.jaxpr)  # one (512, 512) float32 value
  1048576
"""

from __future__ import annotations

import ctypes
import math
import os
import sys

import jax

from jaxnets.jaxprs import nested_jaxprs

ENV_VAR = "JAXNETS_CPU_MEMORY"
HEAP_BYTES = 16 * 2**20  # XLA heaps: well below the mmap threshold, headers included
MMAP_BYTES = 32 * 2**20  # glibc's automatic mmap threshold cap on 64-bit Linux
_HEAP_MARGIN = 2**20  # glibc's and XLA's headers and alignment on top of a heap
TRIM_BYTES = 2**30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from glibc's <malloc.h>
_STATE = {"malloc": None, "mmap_bytes": 0}


def enabled() -> bool:
    """False when ``JAXNETS_CPU_MEMORY`` says off."""
    return os.environ.get(ENV_VAR, "on").strip().lower() not in ("0", "off", "false", "no")


def _value_bytes(aval) -> int:
    shape, dtype = getattr(aval, "shape", None), getattr(aval, "dtype", None)
    if shape is None or dtype is None:
        return 0
    return math.prod(shape) * getattr(dtype, "itemsize", 4)


def largest_value_bytes(closed_jaxpr) -> int:
    """Bytes of the largest value a (closed) jaxpr computes, nested jaxprs included."""
    best = 0
    for jaxpr in nested_jaxprs(closed_jaxpr):
        for var in [*jaxpr.invars, *jaxpr.outvars]:
            best = max(best, _value_bytes(getattr(var, "aval", None)))
        for eqn in jaxpr.eqns:
            for var in eqn.outvars:
                best = max(best, _value_bytes(var.aval))
    return best


def ensure_malloc_reuse(heap_bytes: int = 0) -> bool:
    """Sets glibc's mmap and trim thresholds (process-wide); True if they are set.

    The mmap threshold is `MMAP_BYTES`, or above ``heap_bytes`` when that is
    larger, and only ever rises: raising it more than the programs need would
    also keep other code's large blocks mapped.
    """
    want = max(MMAP_BYTES, heap_bytes + _HEAP_MARGIN if heap_bytes > MMAP_BYTES else 0)
    if _STATE["malloc"] is None or (_STATE["malloc"] and want > _STATE["mmap_bytes"]):
        ok = enabled() and sys.platform.startswith("linux") and _mallopt(want)
        _STATE["malloc"], _STATE["mmap_bytes"] = ok, want if ok else 0
    return _STATE["malloc"]


def _mallopt(mmap_bytes: int) -> bool:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(
            libc.mallopt(_M_MMAP_THRESHOLD, mmap_bytes)
            and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_BYTES)
        )
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return False


def compiler_options(closed_jaxpr, backend: str | None = None) -> dict:
    """The compile options for a program on ``backend`` (default: JAX's); {} off the CPU."""
    if not enabled() or (backend or jax.default_backend()) != "cpu":
        return {}
    heap = max(HEAP_BYTES, largest_value_bytes(closed_jaxpr))
    ensure_malloc_reuse(heap)
    return {"xla_multiheap_size_constraint_per_heap": int(heap)}
