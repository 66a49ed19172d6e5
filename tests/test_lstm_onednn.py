"""`jaxnets.layers.lstm_onednn`: oneDNN's LSTM computes the XLA loop's LSTM.

The comparisons need a C++ compiler and oneDNN (the ``onednn`` extra, in the
``test`` extra); without them they skip, saying which is missing.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import lstm_onednn_ffi as bench
from jaxnets import layers
from jaxnets.layers import lstm_onednn
from jaxnets.layers.lstm_fused import lstm_sequence


@pytest.fixture(scope="module")
def onednn():
    if (reason := lstm_onednn.unavailable_reason()) is not None:
        pytest.skip(reason)


@pytest.mark.parametrize("shape", [(5, 3, 4, 8), (1, 2, 3, 16), (7, 1, 1, 1)])
def test_values_and_gradients_match_the_xla_loop(onednn, shape):
    x = bench.inputs(*shape, seed=sum(shape))
    (va, ga), (vb, gb) = (
        bench.loss_and_grads(f)(*x) for f in (lstm_sequence, lstm_onednn.lstm_sequence)
    )
    np.testing.assert_allclose(float(vb), float(va), rtol=1e-5)
    for a, b in zip(ga, gb, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5)


def test_no_bias_is_a_zero_bias(onednn):
    xs, h0, c0, k, rk, _ = bench.inputs(4, 2, 3, 5)
    hs, c = jax.jit(lstm_onednn.lstm_sequence)(xs, h0, c0, k, rk)
    want_hs, want_c = lstm_sequence(xs, h0, c0, k, rk, None)
    np.testing.assert_allclose(np.asarray(hs), np.asarray(want_hs), atol=1e-6)
    np.testing.assert_allclose(np.asarray(c), np.asarray(want_c), atol=1e-6)


def test_vmap_runs_each_member(onednn):
    members = [bench.inputs(3, 2, 4, 6, seed=s) for s in range(3)]
    stacked = [jnp.stack(parts) for parts in zip(*members, strict=True)]
    hs, _ = jax.jit(jax.vmap(lstm_onednn.lstm_sequence))(*stacked)
    for i, m in enumerate(members):
        np.testing.assert_allclose(np.asarray(hs[i]), np.asarray(lstm_sequence(*m)[0]), atol=1e-6)


def _layer_outputs_and_grads():
    model = nn.Sequential([layers.LSTM(8, return_sequences=True), nn.Dense(3)])
    x = jax.random.normal(jax.random.key(0), (4, 6, 5))
    params = model.init(jax.random.key(1), x)

    def loss(p):
        return jnp.sum(jnp.sin(model.apply(p, x)))

    return jax.jit(jax.value_and_grad(loss))(params)


def test_the_layer_uses_it_and_off_turns_it_off(onednn, monkeypatch):
    calls = []
    original = lstm_onednn.lstm_sequence
    monkeypatch.setattr(lstm_onednn, "lstm_sequence", lambda *a: calls.append(1) or original(*a))
    value, grads = _layer_outputs_and_grads()
    assert calls, "LSTM did not use the oneDNN op for float32 inputs without a mask"
    monkeypatch.setenv(lstm_onednn.ENV_VAR, "off")
    calls.clear()
    want_value, want_grads = _layer_outputs_and_grads()
    assert not calls
    np.testing.assert_allclose(float(value), float(want_value), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_masks_and_other_dtypes_take_the_xla_loop():
    z = jnp.zeros((2, 4))
    args = (jnp.zeros((3, 2, 1)), z, z, jnp.zeros((1, 16)), jnp.zeros((4, 16)), jnp.zeros(16))
    assert not lstm_onednn.usable(*args, jnp.ones((3, 2, 1), bool))
    assert not lstm_onednn.usable(args[0].astype(jnp.bfloat16), *args[1:], None)
    assert lstm_onednn.usable(*args, None) == (lstm_onednn.unavailable_reason() is None)


def test_missing_onednn_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("ONEDNN_ROOT", str(tmp_path))
    monkeypatch.setenv("CXX", "true")  # any compiler: the headers are checked first
    with pytest.raises(RuntimeError, match=f"no oneDNN headers under {tmp_path}"):
        lstm_onednn.build(tmp_path)


def test_a_compiler_error_is_reported(tmp_path, monkeypatch):
    if lstm_onednn.onednn_prefix().joinpath("include/oneapi/dnnl/dnnl.hpp").is_file() is False:
        pytest.skip("oneDNN headers are not installed")
    monkeypatch.setenv("CXX", "false")  # a "compiler" that fails
    with pytest.raises(RuntimeError, match="building the oneDNN LSTM failed"):
        lstm_onednn.build(tmp_path)
    assert not list(tmp_path.iterdir())  # nothing half-written is left to load
