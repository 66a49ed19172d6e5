"""The LSTM forward variants of `benchmarks.lstm_forward_variants` compute the same layer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import lstm_forward_variants as lfv
from jaxnets.layers.lstm_fused import lstm_sequence


@pytest.fixture(scope="module")
def inputs():
    keys = jax.random.split(jax.random.key(1), 6)
    t, b, f, u = lfv.T, lfv.B, lfv.F, lfv.U
    return (
        jax.random.normal(keys[0], (t, b, f)),
        jax.random.normal(keys[1], (b, u)) * 0.5,
        jax.random.normal(keys[2], (b, u)) * 0.5,
        jax.random.normal(keys[3], (f, 4 * u)) * 0.1,
        jax.random.normal(keys[4], (u, 4 * u)) * 0.1,
        jax.random.normal(keys[5], (4 * u,)) * 0.1,
    )


@pytest.mark.parametrize("name", ["concat", "hoisted", "hoisted+carry", "feature-major"])
def test_variant_matches_the_layer(name, inputs):
    hs, _ = lstm_sequence(*inputs)
    got = jax.jit(lfv.VARIANTS[name])(*inputs)
    np.testing.assert_allclose(np.asarray(got), np.asarray(hs), atol=2e-5, rtol=0)


def test_no_input_floor_ignores_the_inputs(inputs):
    xs, *rest = inputs
    a = jax.jit(lfv.no_input)(xs, *rest)
    b = jax.jit(lfv.no_input)(jnp.zeros_like(xs), *rest)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(lstm_sequence(*inputs)[0]), atol=1e-3)
