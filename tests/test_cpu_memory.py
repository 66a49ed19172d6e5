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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_guarded_step_stops_faulting_its_temporaries_in_on_every_call():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(N, N)), jnp.float32)
    plain = jax.jit(big_temporaries)
    temp = plain.lower(x).compile().memory_analysis().temp_size_in_bytes
    assert temp > cpu_memory.MMAP_BYTES  # one block that glibc would mmap afresh each call
    guarded = GuardedStep(jax.jit(big_temporaries), "big", ("x",))
    assert cpu_memory.ensure_malloc_reuse()
    baseline = faults_per_call(plain, x)
    assert baseline > 0.5 * temp / 4096  # the plain program faults its temporaries in each call
    assert faults_per_call(guarded, x) < 0.25 * baseline
    np.testing.assert_array_equal(np.asarray(guarded(x)), np.asarray(plain(x)))  # same numbers
