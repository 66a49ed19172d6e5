"""Core layers: Dense, Activation, Dropout, Embedding, Flatten, Reshape, merges."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets.errors import ConfigError, ShapeError, UnknownNameError
from jaxnets.layers import (
    Activation,
    Add,
    Average,
    Concatenate,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    Multiply,
    Reshape,
    activations,
    initializers,
)


def test_dense_hand_computed():
    layer = Dense(2, kernel_initializer="ones", bias_initializer="ones", activation="relu")
    x = jnp.array([[1.0, 2.0, 3.0], [-4.0, -5.0, -6.0]])
    variables = layer.init(jax.random.key(0), x)
    assert variables["params"]["kernel"].shape == (3, 2)
    np.testing.assert_allclose(layer.apply(variables, x), [[7.0, 7.0], [0.0, 0.0]])


def test_dense_parameter_count_and_no_bias():
    x = jnp.ones((1, 784))
    count = lambda v: sum(a.size for a in jax.tree.leaves(v))
    assert count(Dense(10).init(jax.random.key(0), x)) == 784 * 10 + 10
    assert count(Dense(10, use_bias=False).init(jax.random.key(0), x)) == 7840


def test_input_shape_and_name_are_keyword_fields():
    layer = Dense(4, "relu", input_shape=(3,), name="fc")
    assert (layer.units, layer.activation, layer.input_shape, layer.name) == (
        4,
        "relu",
        (3,),
        "fc",
    )


@pytest.mark.parametrize(
    "name, fn",
    [
        ("relu", lambda x: np.maximum(x, 0)),
        ("sigmoid", lambda x: 1 / (1 + np.exp(-x))),
        ("tanh", np.tanh),
        ("softmax", lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True)),
        # Keras' gelu is the exact erf form, not jax.nn.gelu's tanh default.
        ("gelu", lambda x: x * 0.5 * (1 + np.vectorize(math.erf)(x / np.sqrt(2)))),
        ("elu", lambda x: np.where(x > 0, x, np.exp(x) - 1)),
        (
            "selu",
            lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * (np.exp(x) - 1)),
        ),
        ("leaky_relu", lambda x: np.where(x > 0, x, 0.2 * x)),
        ("swish", lambda x: x / (1 + np.exp(-x))),
        ("linear", lambda x: x),
    ],
)
def test_activations_by_name(rng, name, fn):
    x = rng.normal(size=(3, 5)).astype(np.float32) * 3
    np.testing.assert_allclose(
        Activation(name).apply({}, jnp.asarray(x)), fn(x), rtol=1e-5, atol=1e-6
    )


def test_unknown_activation_lists_valid_names():
    with pytest.raises(UnknownNameError, match="did you mean 'relu'.*Valid activations:.*sigmoid"):
        activations.get("rleu")
    assert activations.get(None)(3.0) == 3.0
    with pytest.raises(UnknownNameError, match="glorot_uniform"):
        initializers.get("glorot")


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_dropout_rate_validated(rate):
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        Dropout(rate)


def test_dropout_train_and_eval():
    x = jnp.ones((20000,))
    assert (Dropout(0.3).apply({}, x) == x).all()
    y = Dropout(0.3).apply({}, x, train=True, rngs={"dropout": jax.random.key(1)})
    np.testing.assert_allclose(np.unique(np.asarray(y)), [0.0, 1 / 0.7], rtol=1e-6)
    assert abs(float((y == 0).mean()) - 0.3) < 0.02
    assert abs(float(y.mean()) - 1.0) < 0.03  # inverted dropout keeps the mean


def test_dropout_noise_shape_with_none_entries_as_in_keras():
    x = jnp.ones((4, 50, 3))
    rngs = {"dropout": jax.random.key(0)}
    y = Dropout(0.5, noise_shape=(None, 1, 3)).apply({}, x, train=True, rngs=rngs)
    # one mask per example and channel, shared by all 50 steps
    assert (y == y[:, :1, :]).all() and 0 < int((y[:, 0] == 0).sum()) < 12
    same = Dropout(0.5, noise_shape=(4, 1, 3)).apply({}, x, train=True, rngs=rngs)
    np.testing.assert_array_equal(y, same)  # None means the input's size
    for bad in ((None, 1), (None, 2, 3)):
        with pytest.raises(
            ShapeError, match=r"noise_shape .* does not fit inputs of shape \(4, 50, 3\)"
        ):
            Dropout(0.5, noise_shape=bad).apply({}, x, train=True, rngs=rngs)


def test_embedding_lookup_and_mask():
    layer = Embedding(5, 3, mask_zero=True)
    tokens = jnp.array([[1, 4, 0]])
    variables = layer.init(jax.random.key(0), tokens)
    table = variables["params"]["embedding"]
    assert table.shape == (5, 3) and float(jnp.abs(table).max()) <= 0.05
    np.testing.assert_allclose(layer.apply(variables, tokens)[0], table[jnp.array([1, 4, 0])])
    assert layer.compute_mask(tokens).tolist() == [[True, True, False]]


def test_flatten_reshape():
    x = jnp.arange(24.0).reshape(2, 3, 4)
    assert Flatten().apply({}, x).shape == (2, 12)
    assert Reshape((4, -1)).apply({}, x).shape == (2, 4, 3)
    with pytest.raises(ShapeError, match="same number of elements"):
        Reshape((5,)).apply({}, x)


def test_merges():
    a, b = jnp.ones((2, 3)), 2 * jnp.ones((2, 3))
    assert Concatenate().apply({}, [a, b]).shape == (2, 6)
    assert Concatenate(axis=0).apply({}, [a, b]).shape == (4, 3)
    np.testing.assert_allclose(Add().apply({}, [a, b, b]), 5 * a)
    np.testing.assert_allclose(Multiply().apply({}, [b, b]), 4 * a)
    np.testing.assert_allclose(Average().apply({}, [a, b]), 1.5 * a)
    with pytest.raises(ShapeError, match="list of at least 2"):
        Add().apply({}, a)


def test_gelu_value_and_derivatives_match_the_normal_cdf_closed_form():
    # Oracle in float64: gelu = x * Phi(x), gelu' = Phi + x * phi, gelu'' = phi * (2 - x^2).
    x = np.linspace(-12, 12, 4001)
    cdf = 0.5 * np.vectorize(math.erfc)(-x / np.sqrt(2))
    pdf = np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)
    xs = jnp.asarray(x, jnp.float32)
    gelu = activations.get("gelu")
    np.testing.assert_allclose(gelu(xs), x * cdf, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(jax.vmap(jax.grad(gelu))(xs), cdf + x * pdf, rtol=1e-5, atol=1e-6)
    second = jax.vmap(jax.grad(jax.grad(gelu)))(xs)
    np.testing.assert_allclose(second, pdf * (2 - x * x), rtol=1e-4, atol=1e-6)


def test_gelu_keeps_float_dtypes_and_promotes_integers():
    gelu = activations.get("gelu")
    assert gelu(jnp.ones(2, jnp.bfloat16)).dtype == jnp.bfloat16
    assert gelu(jnp.ones(2, jnp.float16)).dtype == jnp.float16
    assert gelu(jnp.array([1, 2])).dtype == jnp.float32
    assert float(gelu(2.0)) == pytest.approx(2.0 * 0.5 * (1 + math.erf(2 / math.sqrt(2))), rel=1e-6)


@pytest.mark.parametrize("shape", [(4,), (6, 4), (2, 3, 4), (2, 3, 2, 4)])
def test_rows_dot_values_and_gradients_match_numpy(rng, shape):
    from jaxnets.layers.core import rows_dot

    x = rng.normal(size=shape).astype(np.float32)
    w = rng.normal(size=(4, 5)).astype(np.float32)
    c = rng.normal(size=(*shape[:-1], 5)).astype(np.float32)
    np.testing.assert_allclose(rows_dot(x, w), x.astype(np.float64) @ w, rtol=1e-5, atol=1e-5)
    dx, dw = jax.grad(lambda x, w: jnp.sum(rows_dot(x, w) * c), argnums=(0, 1))(x, w)
    x2, c2 = x.reshape(-1, 4).astype(np.float64), c.reshape(-1, 5)
    np.testing.assert_allclose(dw, x2.T @ c2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, (c2 @ w.T).reshape(shape), rtol=1e-5, atol=1e-5)
