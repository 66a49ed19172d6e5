"""`jaxnets.cpu_memory`: a compiled step reuses its host memory instead of faulting it in."""

import resource
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxnets import cpu_memory
from jaxnets.compile import GuardedStep

N = 1536  # one (N, N) float32 value is 9.4 MB; the program below holds six at once

pytestmark = pytest.mark.cpu


def big_temporaries(x):
    # The barrier keeps XLA from fusing the values away: they must exist together.
    values = lax.optimization_barrier([jnp.sin(x * (i + 1)) for i in range(6)])
    out = values[0]
    for v in values[1:]:
        out = out * v + 1.0
    return out.sum(axis=0)


def faults_per_call(fn, x, calls=8):
    fn(x).block_until_ready()
    fn(x).block_until_ready()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn(x).block_until_ready()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def test_largest_value_bytes_looks_inside_nested_programs():
    def f(x):
        def body(c, _):
            wide = jnp.outer(c, c)  # (64, 64) float32 inside the scan: the largest value
            return c + wide.sum(0), None

        return lax.scan(body, x, None, length=2)[0]

    traced = jax.jit(f).trace(jnp.ones(64, jnp.float32))
    assert cpu_memory.largest_value_bytes(traced.jaxpr) == 64 * 64 * 4


def test_options_only_on_the_cpu_and_only_when_on(monkeypatch):
    traced = jax.jit(big_temporaries).trace(jnp.ones((8, 8)))
    assert cpu_memory.compiler_options(traced.jaxpr, "cpu") == {
        "xla_multiheap_size_constraint_per_heap": cpu_memory.HEAP_BYTES
    }
    assert cpu_memory.compiler_options(traced.jaxpr, "gpu") == {}
    monkeypatch.setenv(cpu_memory.ENV_VAR, "off")
    assert cpu_memory.compiler_options(traced.jaxpr, "cpu") == {}


_CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
import jax, jax.numpy as jnp, numpy as np
from test_cpu_memory import N, big_temporaries, faults_per_call
from jaxnets import cpu_memory
from jaxnets.compile import GuardedStep
x = jnp.asarray(np.random.default_rng(0).normal(size=(N, N)), jnp.float32)
plain = jax.jit(big_temporaries)
before = faults_per_call(plain, x)  # measured before jaxnets changes any setting
guarded = GuardedStep(jax.jit(big_temporaries), "big", ("x",), reuse_memory=True)
print(json.dumps({{
    "temp": plain.lower(x).compile().memory_analysis().temp_size_in_bytes,
    "guarded": faults_per_call(guarded, x), "plain": before,
    "malloc": cpu_memory.ensure_malloc_reuse(),
    "same": bool(np.array_equal(np.asarray(guarded(x)), np.asarray(plain(x)))),
}}))
"""


@pytest.mark.subprocess
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_guarded_step_stops_faulting_its_temporaries_in_on_every_call():
    # A fresh process: how many pages a call faults in depends on the allocator's history.
    import json
    import subprocess
    from pathlib import Path

    tests = str(Path(__file__).resolve().parent)
    code = _CHILD.format(tests=tests)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["temp"] > cpu_memory.MMAP_BYTES  # one block that glibc maps afresh each call
    assert got["plain"] > 0.5 * got["temp"] / 4096  # so the plain program faults it all in
    assert got["malloc"] and got["same"]
    # Measured 2-42% of the plain program's faults; without the settings, 100%.
    assert got["guarded"] < 0.6 * got["plain"]


def test_a_program_with_several_heaps_compiles_quietly_with_the_persistent_cache_on(tmp_path):
    # XLA cannot serialize an executable with several temp heaps; it is simply not cached
    # (pytest turns the warning JAX would print into an error).
    from jaxnets import compile as compile_lib

    before = compile_lib.cache_dir()
    try:
        compile_lib.enable_cache(tmp_path / "xla")
        x = jnp.ones((N, N), jnp.float32)
        step = GuardedStep(jax.jit(big_temporaries), "big", ("x",), reuse_memory=True)
        np.testing.assert_array_equal(np.asarray(step(x)), np.asarray(big_temporaries(x)))
    finally:
        compile_lib.enable_cache(before) if before else compile_lib.disable_cache()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_the_mmap_threshold_rises_to_fit_a_larger_heap_and_never_falls():
    assert cpu_memory.ensure_malloc_reuse()
    assert cpu_memory._STATE["mmap_bytes"] >= cpu_memory.MMAP_BYTES
    heap = 40 * 2**20  # the oneDNN LSTM's workspace is about this large
    assert cpu_memory.ensure_malloc_reuse(heap)
    raised = cpu_memory._STATE["mmap_bytes"]
    assert raised > heap
    assert cpu_memory.ensure_malloc_reuse(cpu_memory.HEAP_BYTES)
    assert cpu_memory._STATE["mmap_bytes"] == raised
