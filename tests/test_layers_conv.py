"""Convolutions: im2col/col2im against XLA's own ops, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.test_util import check_grads

from jaxnets.errors import ConfigError, ShapeError, UnknownNameError
from jaxnets.layers import Conv1D, Conv2D, Conv2DTranspose, conv_ops

DIMS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}


def _arrays(rng, nd, n, k, cin=3, cout=4):
    x = jnp.asarray(rng.normal(size=(2, *(n,) * nd, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(*(k,) * nd, cin, cout)), jnp.float32)
    return x, w


@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("n", [7, 8])
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_im2col_matches_lax_conv(rng, nd, n, k, stride, padding):
    x, w = _arrays(rng, nd, n, k)
    # The oracle is XLA's convolution with its own 'SAME' rule, not our pads.
    want = lax.conv_general_dilated(
        x, w, (stride,) * nd, padding.upper(), dimension_numbers=DIMS[nd]
    )
    got = conv_ops.conv_im2col(x, w, strides=(stride,) * nd, padding=padding)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("nd", [1, 2])
def test_im2col_dilation_matches_lax(rng, nd):
    x, w = _arrays(rng, nd, 9, 3)
    want = lax.conv_general_dilated(
        x, w, (1,) * nd, "SAME", rhs_dilation=(2,) * nd, dimension_numbers=DIMS[nd]
    )
    got = conv_ops.conv_im2col(x, w, strides=(1,) * nd, padding="same", dilation=(2,) * nd)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_causal_conv1d_sees_only_the_past(rng):
    x, w = _arrays(rng, 1, 10, 3)
    want = lax.conv_general_dilated(x, w, (1,), [(2, 0)], dimension_numbers=DIMS[1])
    for impl in ("im2col", "xla"):
        layer = Conv1D(4, 3, padding="causal", use_bias=False, impl=impl)
        got = layer.apply({"params": {"kernel": w}}, x)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_im2col_gradients(rng, nd, padding):
    x, w = _arrays(rng, nd, 5, 3, cin=2, cout=2)

    def f(impl):
        fn = conv_ops.conv_im2col if impl == "im2col" else conv_ops.conv_xla
        return lambda x, w: fn(x, w, strides=(2,) * nd, padding=padding)

    check_grads(f("im2col"), (x, w), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
    loss = lambda impl: lambda x, w: jnp.sum(jnp.sin(f(impl)(x, w)))
    g_im2col = jax.grad(loss("im2col"), argnums=(0, 1))(x, w)
    g_xla = jax.grad(loss("xla"), argnums=(0, 1))(x, w)
    for a, b in zip(g_im2col, g_xla, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k, stride", [(3, 1), (4, 2), (5, 2), (2, 3)])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_col2im_transpose_matches_lax(rng, k, stride, padding):
    x, w = _arrays(rng, 2, 5, k)
    want = lax.conv_transpose(x, w, (stride, stride), padding.upper(), dimension_numbers=DIMS[2])
    got = conv_ops.conv_transpose_col2im(x, w, strides=(stride, stride), padding=padding)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Keras' output lengths: n*s ('same'), n*s + max(k - s, 0) ('valid').
    extra = 0 if padding == "same" else max(k - stride, 0)
    assert got.shape == (2, 5 * stride + extra, 5 * stride + extra, 4)


@pytest.mark.slow
def test_col2im_transpose_gradients(rng):
    x, w = _arrays(rng, 2, 4, 4, cin=2, cout=2)
    f = lambda x, w: conv_ops.conv_transpose_col2im(x, w, strides=(2, 2), padding="same")
    check_grads(f, (x, w), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)


def _conv_then_max_pool(x, w, pool):
    """The oracle: XLA's convolution, then XLA's max pool (`lax.reduce_window`)."""
    nd = x.ndim - 2
    y = lax.conv_general_dilated(x, w, (1,) * nd, "VALID", dimension_numbers=DIMS[nd])
    window = (1, *pool, 1)
    return lax.reduce_window(y, -jnp.inf, lax.max, window, window, "VALID")


@pytest.mark.parametrize(
    "shape, k, pool",
    [
        ((2, 28, 28, 1), (3, 3), (2, 2)),  # the zoo CNN's first block: 26 -> 13
        ((2, 13, 13, 4), (3, 3), (2, 2)),  # its second: 11 -> 5, the last row never computed
        ((2, 9, 10, 3), (2, 3), (3, 2)),  # rectangular kernel and pool, remainders on both sides
        ((3, 11, 2), (3,), (3,)),  # 1-D
        ((2, 4, 4, 2), (1, 1), (4, 4)),  # one window covering the whole map
    ],
)
def test_conv_maxpool_matches_conv_then_pool(rng, shape, k, pool):
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=(*k, shape[-1], 5)), jnp.float32)
    got = conv_ops.conv_maxpool_im2col(x, w, pool)
    want = _conv_then_max_pool(x, w, pool)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Gradients too (normal inputs: no window holds a tie).
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w, pool)))  # noqa: E731
    got = jax.grad(loss(conv_ops.conv_maxpool_im2col), argnums=(0, 1))(x, w)
    want = jax.grad(loss(_conv_then_max_pool), argnums=(0, 1))(x, w)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_conv_maxpool_splits_ties_as_the_pooling_layer():
    # Constant images make every window a four-way tie: the gradient must be shared
    # out exactly as conv_im2col followed by MaxPooling2D's slices share it.
    from jaxnets.layers import MaxPooling2D

    x, w = jnp.ones((2, 7, 7, 2)), jnp.linspace(-1, 1, 3 * 3 * 2 * 3).reshape(3, 3, 2, 3)
    pool = MaxPooling2D(2, impl="im2col")

    def layered(x, w):
        return pool.apply({}, conv_ops.conv_im2col(x, w, strides=(1, 1), padding="valid"))

    loss = lambda f: lambda x, w: jnp.sum(f(x, w) * jnp.arange(3.0))  # noqa: E731
    got = jax.grad(loss(lambda x, w: conv_ops.conv_maxpool_im2col(x, w, (2, 2))), (0, 1))(x, w)
    want = jax.grad(loss(layered), (0, 1))(x, w)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_conv_maxpool_too_small_input_says_so():
    x, w = jnp.ones((1, 3, 3, 1)), jnp.ones((3, 3, 1, 2))  # a 1x1 map cannot fill a 2x2 pool
    with pytest.raises(ShapeError, match=r"\(3, 3\) is too small .* \(2, 2\) pool"):
        conv_ops.conv_maxpool_im2col(x, w, (2, 2))


@pytest.mark.parametrize(
    "layer, shape",
    [
        (Conv2D(5, 3, strides=2, padding="same", activation="relu"), (2, 9, 9, 3)),
        (Conv1D(5, 4, padding="valid"), (2, 12, 3)),
        (Conv2DTranspose(5, 4, strides=2, padding="same"), (2, 6, 6, 3)),
    ],
)
def test_impls_share_parameters_and_outputs(rng, layer, shape):
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    im2col, xla = layer.clone(impl="im2col"), layer.clone(impl="xla")
    v1 = im2col.init(jax.random.key(0), x)
    v2 = xla.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, v1) == jax.tree.map(jnp.shape, v2)
    np.testing.assert_allclose(im2col.apply(v1, x), xla.apply(v1, x), rtol=1e-5, atol=1e-5)


def test_parameter_shapes_and_hand_computed_output():
    layer = Conv2D(2, (2, 3), kernel_initializer="ones", bias_initializer="ones")
    x = jnp.ones((1, 4, 5, 3))
    variables = layer.init(jax.random.key(0), x)
    assert variables["params"]["kernel"].shape == (2, 3, 3, 2)  # HWIO
    # Each output sums a 2x3 window of 3 channels of ones, plus bias 1.
    np.testing.assert_allclose(layer.apply(variables, x), np.full((1, 3, 3, 2), 19.0))


@pytest.mark.cpu
def test_auto_picks_im2col_on_cpu():
    from jaxnets.layers.base import resolve_impl

    assert jax.default_backend() == "cpu"
    assert resolve_impl("auto") == "im2col"
    assert resolve_impl("XLA") == "xla"
    with pytest.raises(UnknownNameError, match="im2col"):
        resolve_impl("fast")


def test_errors_say_what_is_wrong():
    x = jnp.ones((1, 8, 8, 3))
    with pytest.raises(UnknownNameError, match="'same'"):
        Conv2D(2, 3, padding="sane").init(jax.random.key(0), x)
    with pytest.raises(UnknownNameError):
        Conv2D(2, 3, padding="causal").init(jax.random.key(0), x)
    with pytest.raises(ShapeError, match="rank 4"):
        Conv2D(2, 3).init(jax.random.key(0), jnp.ones((8, 8, 3)))
    with pytest.raises(ConfigError):
        Conv2D(2, 3, strides=2, dilation_rate=2).init(jax.random.key(0), x)
    with pytest.raises(ConfigError):
        Conv2DTranspose(2, 3, dilation_rate=2)


def test_jit_compiles_once(rng):
    layer = Conv2D(4, 3, padding="same")
    x = jnp.asarray(rng.normal(size=(2, 6, 6, 1)), jnp.float32)
    params = layer.init(jax.random.key(0), x)
    traces = []

    @jax.jit
    def f(p, x):
        traces.append(1)
        return layer.apply(p, x)

    f(params, x)
    f(params, x + 1)
    assert len(traces) == 1
