"""Pooling: reshape / shifted-slice kernels against flax's reduce_window pooling."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets.errors import ShapeError, UnknownNameError
from jaxnets.layers import (
    AveragePooling1D,
    AveragePooling2D,
    GlobalAveragePooling1D,
    GlobalAveragePooling2D,
    GlobalMaxPooling1D,
    GlobalMaxPooling2D,
    MaxPooling1D,
    MaxPooling2D,
)

LAYERS = {
    (1, "max"): MaxPooling1D,
    (2, "max"): MaxPooling2D,
    (1, "avg"): AveragePooling1D,
    (2, "avg"): AveragePooling2D,
}


def _oracle(x, reduce, pool, strides, padding):
    if reduce == "max":
        return nn.max_pool(x, pool, strides, padding.upper())
    # Keras' 'same' average pooling divides by the real inputs in each window.
    return nn.avg_pool(x, pool, strides, padding.upper(), count_include_pad=False)


@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("reduce", ["max", "avg"])
@pytest.mark.parametrize("pool, stride", [(2, None), (3, None), (3, 2), (2, 1)])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("n", [7, 8])
def test_pooling_matches_flax(rng, nd, reduce, pool, stride, padding, n):
    x = jnp.asarray(rng.normal(size=(2, *(n,) * nd, 3)), jnp.float32)
    s = pool if stride is None else stride
    want = _oracle(x, reduce, (pool,) * nd, (s,) * nd, padding)
    for impl in ("im2col", "xla"):
        layer = LAYERS[nd, reduce](pool, strides=stride, padding=padding, impl=impl)
        got = layer.apply({}, x)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reduce", ["max", "avg"])
@pytest.mark.parametrize("pool, stride", [(2, 2), (3, 2)])
def test_pooling_gradients_match_flax(rng, reduce, pool, stride):
    # Continuous random inputs: no ties, so the max gradient is unambiguous.
    x = jnp.asarray(rng.normal(size=(2, 7, 7, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(2, 4, 4, 3)), jnp.float32)
    layer = LAYERS[2, reduce](pool, strides=stride, padding="same", impl="im2col")
    got = jax.grad(lambda x: jnp.sum(w * layer.apply({}, x)))(x)
    want = jax.grad(
        lambda x: jnp.sum(w * _oracle(x, reduce, (pool, pool), (stride, stride), "same"))
    )(x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_max_pool_hand_computed():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    assert MaxPooling2D(2).apply({}, x)[0, :, :, 0].tolist() == [[5.0, 7.0], [13.0, 15.0]]
    assert AveragePooling2D(2).apply({}, x)[0, :, :, 0].tolist() == [[2.5, 4.5], [10.5, 12.5]]


def test_global_pooling(rng):
    x = jnp.asarray(rng.normal(size=(2, 5, 4, 3)), jnp.float32)
    np.testing.assert_allclose(GlobalAveragePooling2D().apply({}, x), x.mean((1, 2)), rtol=1e-6)
    np.testing.assert_allclose(GlobalMaxPooling2D().apply({}, x), x.max((1, 2)))
    assert GlobalAveragePooling2D(keepdims=True).apply({}, x).shape == (2, 1, 1, 3)
    seq = jnp.asarray(rng.normal(size=(2, 6, 3)), jnp.float32)
    mask = jnp.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    avg = GlobalAveragePooling1D().apply({}, seq, mask=mask)
    np.testing.assert_allclose(avg[0], seq[0, :3].mean(0), rtol=1e-6)
    np.testing.assert_allclose(avg[1], seq[1].mean(0), rtol=1e-6)
    mx = GlobalMaxPooling1D().apply({}, seq, mask=mask)
    np.testing.assert_allclose(mx[0], seq[0, :3].max(0))


def test_global_pooling_of_a_fully_masked_row_is_zero(rng):
    # Both poolings give 0 for a row with no valid step: no -inf reaches the next layer.
    seq = jnp.asarray(rng.normal(size=(2, 4, 3)), jnp.float32) - 10.0  # all values negative
    mask = jnp.array([[0, 0, 0, 0], [1, 1, 0, 0]], bool)
    for layer in (GlobalMaxPooling1D(), GlobalAveragePooling1D()):
        out = layer.apply({}, seq, mask=mask)
        assert out.dtype == jnp.float32
        np.testing.assert_array_equal(out[0], np.zeros(3, np.float32))
    np.testing.assert_allclose(GlobalMaxPooling1D().apply({}, seq, mask=mask)[1], seq[1, :2].max(0))


def test_pooling_errors():
    with pytest.raises(ShapeError, match="rank 4"):
        MaxPooling2D().apply({}, jnp.ones((4, 4, 1)))
    with pytest.raises(UnknownNameError, match="valid"):
        MaxPooling2D(padding="full").apply({}, jnp.ones((1, 4, 4, 1)))


def test_pooling_a_too_small_input_names_the_layer_and_the_fix():
    import jax
    import jax.numpy as jnp
    import pytest

    from jaxnets import models
    from jaxnets.errors import ShapeError

    # The zoo CNN's two valid convs and pools need >= 10x10 images; 8x8 digits fail clearly.
    with pytest.raises(ShapeError, match=r"MaxPooling2D.*\(1, 1\) input.*padding='same'"):
        models.get("cnn").init(jax.random.key(0), jnp.ones((1, 8, 8, 1)))


def test_global_pooling_rejects_a_mask_it_cannot_use():
    with pytest.raises(ShapeError, match=r"mask of shape \(B, T\).*1-D pooling only.*\(2, 3, 3\)"):
        GlobalAveragePooling2D().apply({}, jnp.ones((2, 3, 3, 4)), mask=jnp.ones((2, 3, 3)))
    with pytest.raises(ShapeError, match=r"\(B, T\) = \(2, 5\).*got a mask of shape \(2, 4\)"):
        GlobalMaxPooling1D().apply({}, jnp.ones((2, 5, 3)), mask=jnp.ones((2, 4)))
