"""Layers against Keras 3.15 (JAX backend): the defects a bug hunt found, pinned.

Keras is not needed at run time: where Keras is the oracle its observed numbers or
behaviour are written into the test (each test says what Keras did).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets.errors import ConfigError, ShapeError
from jaxnets.layers import (
    AveragePooling1D,
    AveragePooling2D,
    BatchNormalization,
    Conv1D,
    Conv2D,
    Dense,
    LayerNormalization,
    MaxPooling2D,
    MultiHeadAttention,
)


def _random_variables(layer, *args):
    v = layer.init(jax.random.key(0), *args)
    leaves, tree = jax.tree.flatten(v)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    return jax.tree.unflatten(
        tree, [0.5 * jax.random.normal(k, a.shape) for k, a in zip(keys, leaves)]
    )


def _uniform_over_all_keys(params, value):
    """Attention output of a query row whose weights are uniform over every key (NumPy)."""
    p = jax.tree.map(np.asarray, params["params"])
    vh = np.einsum("bsd,dhv->bshv", value, p["value"]["kernel"]) + p["value"]["bias"]
    out = p["attention_output"]
    return np.einsum("bhv,hvo->bo", vh.mean(axis=1), out["kernel"]) + out["bias"]


@pytest.mark.parametrize("path", ["scores", "dropout", "fused"])
def test_attention_row_without_keys_as_keras(rng, path):
    # Keras 3.15 MultiHeadAttention, attention_mask row all False: when it computes the
    # weights (return_attention_scores, or dropout in training) it multiplies the softmax
    # by the mask: scores [0, 0, 0, 0, 0], output = the output bias; jaxnets gave uniform
    # weights there. Otherwise (its fused dot_product_attention) the row is uniform over
    # all keys, as jaxnets' is. Rows with keys are unchanged.
    q = jnp.asarray(rng.normal(size=(2, 4, 6)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(2, 5, 3)), jnp.float32)
    mask = np.ones((2, 4, 5), bool)
    mask[0, 1] = False
    mask[1, :, 3:] = False
    mha = MultiHeadAttention(num_heads=2, key_dim=3, dropout=0.5 if path == "dropout" else 0.0)
    params = _random_variables(mha, q, v)
    kwargs = {"attention_mask": mask}
    if path == "dropout":
        kwargs.update(train=True, rngs={"dropout": jax.random.key(2)})
    out = mha.apply(params, q, v, return_attention_scores=path == "scores", **kwargs)
    bias = params["params"]["attention_output"]["bias"]
    if path == "scores":
        out, w = out
        np.testing.assert_array_equal(w[0, :, 1], 0.0)
        np.testing.assert_allclose(w[1].sum(-1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(w[1, ..., 3:], 0.0)
    if path == "fused":
        want = _uniform_over_all_keys(params, np.asarray(v[:1]))[0]
        np.testing.assert_allclose(out[0, 1], want, rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_allclose(out[0, 1], bias, rtol=1e-6, atol=1e-6)
    if path != "dropout":  # the rows with keys: unmasked attention over the kept keys
        ref = mha.apply(params, q[1:], v[1:, :3])
        np.testing.assert_allclose(out[1], ref[0], rtol=1e-5, atol=1e-5)


def test_self_attention_mask_masks_padded_queries_as_keras(rng):
    # Keras 3.15, functional model Embedding(mask_zero=True) -> mha(e, e): the propagated
    # mask masks the queries as well as the keys. With return_attention_scores the scores
    # of padded query steps were all zeros and their outputs the output bias; without, the
    # padded steps were uniform over all keys. jaxnets masked the keys only.
    x = jnp.asarray(rng.normal(size=(2, 4, 4)), jnp.float32)
    mask = jnp.array([[1, 1, 0, 0], [1, 1, 1, 0]], bool)
    mha = MultiHeadAttention(num_heads=2, key_dim=2)
    params = _random_variables(mha, x)
    out, w = mha.apply(params, x, mask=mask, return_attention_scores=True)
    np.testing.assert_array_equal(w[0, :, 2:], 0.0)
    np.testing.assert_array_equal(w[1, :, 3], 0.0)
    np.testing.assert_array_equal(w[0, :, :2, 2:], 0.0)
    bias = params["params"]["attention_output"]["bias"]
    np.testing.assert_allclose(out[0, 2:], jnp.broadcast_to(bias, (2, 4)), atol=1e-6)
    fused = mha.apply(params, x, mask=mask)
    want = _uniform_over_all_keys(params, np.asarray(x[:1]))[0]
    np.testing.assert_allclose(fused[0, 2], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fused[0, 3], want, rtol=1e-5, atol=1e-5)
    # Real steps attend as before, only to the real keys, in both paths.
    ref = mha.apply(params, x[:1, :2])
    np.testing.assert_allclose(out[0, :2], ref[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused[0, :2], ref[0], rtol=1e-5, atol=1e-6)


def _avg_pool_numpy(x, pool, strides, padding):
    """Keras' average pooling, 1-D: pads as TensorFlow, divides by the real inputs."""
    n = x.shape[1]
    if padding == "same":
        out = -(-n // strides)
        total = max((out - 1) * strides + pool - n, 0)
        low = total // 2
    else:
        out, low = (n - pool) // strides + 1, 0
    rows = []
    for o in range(out):
        start = o * strides - low
        window = x[:, max(start, 0) : min(start + pool, n)]
        rows.append(window.mean(axis=1))
    return np.stack(rows, axis=1)


@pytest.mark.parametrize("impl", ["im2col", "xla"])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_average_pooling_with_strides_unlike_pool_size_compiles(rng, impl, padding):
    # AveragePooling with strides != pool_size crashed under jit (so in every fit) with a
    # TracerArrayConversionError: its window counts were computed with jax ops.
    x = rng.normal(size=(2, 7, 3)).astype(np.float32)
    layer = AveragePooling1D(3, strides=2, padding=padding, impl=impl)
    got = jax.jit(lambda x: layer.apply({}, x))(x)
    np.testing.assert_allclose(got, _avg_pool_numpy(x, 3, 2, padding), rtol=1e-6, atol=1e-6)
    x2 = rng.normal(size=(1, 5, 6, 2)).astype(np.float32)
    layer2 = AveragePooling2D((3, 2), strides=(2, 3), padding=padding, impl=impl)
    want = nn.avg_pool(x2, (3, 2), (2, 3), padding.upper(), count_include_pad=False)
    np.testing.assert_allclose(jax.jit(lambda x: layer2.apply({}, x))(x2), want, rtol=1e-6)


def test_too_small_input_for_a_valid_convolution_is_a_shape_error():
    # Keras: "Computed output size would be zero or negative"; jaxnets raised a TypeError
    # from lax.slice about negative limit indices.
    layer = Conv2D(2, 5)
    with pytest.raises(ShapeError, match=r"kernel_size \(5, 5\).*\(3, 3\)"):
        layer.init(jax.random.key(0), jnp.ones((1, 3, 3, 1)))
    with pytest.raises(ShapeError, match="dilation_rate"):
        Conv1D(2, 3, dilation_rate=3, impl="xla").init(jax.random.key(0), jnp.ones((1, 6, 1)))
    # 'same', 'causal' and exact fits still work.
    assert Conv2D(2, 5, padding="same").init(jax.random.key(0), jnp.ones((1, 3, 3, 1)))
    assert Conv1D(2, 5, padding="causal").init(jax.random.key(0), jnp.ones((1, 3, 1)))
    assert Conv1D(2, 3, dilation_rate=3).init(jax.random.key(0), jnp.ones((1, 7, 1)))


def test_dense_on_rank_1_inputs_is_a_shape_error():
    # Keras: "expected min_ndim=2, found ndim=1"; jaxnets made a (batch, units) kernel
    # from the batch size and failed later with a Flax parameter-shape error.
    with pytest.raises(ShapeError, match=r"rank >= 2.*\(8,\)"):
        Dense(1).init(jax.random.key(0), jnp.ones((8,)))


@pytest.mark.parametrize("layer", [BatchNormalization, LayerNormalization])
def test_normalization_axis_out_of_range_is_a_shape_error(layer):
    # Keras raises for axis=3 on a (2, 4) input; jaxnets wrapped it to axis 1 silently.
    with pytest.raises(ShapeError, match="axis 3 is out of range for inputs of rank 2"):
        layer(axis=3).init(jax.random.key(0), jnp.ones((2, 4)))
    variables = layer(axis=-2).init(jax.random.key(0), jnp.ones((2, 3, 4)))
    assert variables["params"]["scale"].shape == (3,)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Dense(0), "Dense units must be a positive integer, got 0"),
        (lambda: Conv2D(0, 3), "Conv2D filters must be a positive integer"),
        (lambda: Conv2D(2, 0), r"Conv2D kernel_size must be positive, got \(0, 0\)"),
        (lambda: Conv1D(2, 3, strides=0), "Conv1D strides must be positive"),
        (lambda: MaxPooling2D(0), "MaxPooling2D pool_size must be positive"),
        (lambda: AveragePooling1D(2, strides=0), "AveragePooling1D strides must be positive"),
    ],
)
def test_non_positive_sizes_are_config_errors_at_construction(make, match):
    # Keras rejects these when the layer is made; jaxnets divided by zero while tracing.
    with pytest.raises(ConfigError, match=match):
        make()
    assert Dense(np.int64(3)).units == 3  # NumPy integers are integers


def test_sequential_call_takes_keras_training_keyword(rng):
    # Keras code calls ``model(x, training=False)``; jaxnets' Sequential raised
    # "TypeError: __call__() got an unexpected keyword argument 'training'".
    from jaxnets.keras import Sequential
    from jaxnets.layers import Dropout

    model = Sequential([Dense(3, input_shape=(4,)), Dropout(0.5), Dense(1)])
    x = rng.normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(model(x, training=False), model(x), rtol=1e-6)
    with pytest.raises(ConfigError, match="training=True"):  # as documented for model(x)
        model(x, training=True)
    # Inside a Flax apply the keyword sets the mode as ``train`` does.
    variables = model.init(jax.random.key(0), x)
    rngs = {"dropout": jax.random.key(1)}
    np.testing.assert_array_equal(
        model.apply(variables, x, training=True, rngs=rngs),
        model.apply(variables, x, train=True, rngs=rngs),
    )
    assert not np.allclose(model.apply(variables, x, training=True, rngs=rngs), model(x))


def test_merge_layers_name_mismatched_shapes():
    # Keras raises ValueError naming the shapes; jaxnets raised jax's TypeError while tracing.
    from jaxnets.layers import Add, Average, Concatenate, Multiply

    a, b = jnp.ones((2, 3)), jnp.ones((2, 4))
    for layer in (Add(), Multiply(), Average()):
        with pytest.raises(ShapeError, match=r"\(2, 3\), \(2, 4\)"):
            layer.apply({}, [a, b])
    assert Add().apply({}, [a, jnp.ones((1, 3))]).shape == (2, 3)  # broadcasting, as Keras
    with pytest.raises(ShapeError, match="match on every other axis"):
        Concatenate(axis=0).apply({}, [a, b])
    with pytest.raises(ShapeError, match="one rank"):
        Concatenate().apply({}, [a, jnp.ones((2, 3, 1))])
    assert Concatenate().apply({}, [a, b]).shape == (2, 7)
    assert Concatenate(axis=1).apply({}, [a, b]).shape == (2, 7)


# -- Keras layers that were missing (a Keras script using them did not port) ----------------


def test_padding_cropping_permute_repeat_as_numpy(rng):
    from jaxnets.layers import (
        Cropping1D,
        Cropping2D,
        Permute,
        RepeatVector,
        UpSampling1D,
        UpSampling2D,
        ZeroPadding1D,
        ZeroPadding2D,
    )

    x = rng.normal(size=(2, 5, 4, 3)).astype(np.float32)
    x1 = x[:, :, 0]
    pad = ZeroPadding2D(((1, 0), (2, 3))).apply({}, x)
    np.testing.assert_array_equal(pad, np.pad(x, [(0, 0), (1, 0), (2, 3), (0, 0)]))
    assert ZeroPadding2D().apply({}, x).shape == (2, 7, 6, 3)  # Keras: 1 on every side
    assert ZeroPadding2D((1, 2)).apply({}, x).shape == (2, 7, 8, 3)
    np.testing.assert_array_equal(
        ZeroPadding1D((0, 2)).apply({}, x1), np.pad(x1, [(0, 0), (0, 2), (0, 0)])
    )
    np.testing.assert_array_equal(Cropping2D(((0, 2), (1, 1))).apply({}, x), x[:, :3, 1:3])
    np.testing.assert_array_equal(Cropping2D((1, 0)).apply({}, x), x[:, 1:4])
    np.testing.assert_array_equal(Cropping1D().apply({}, x1), x1[:, 1:4])  # Keras default (1, 1)
    np.testing.assert_array_equal(UpSampling1D(3).apply({}, x1), np.repeat(x1, 3, axis=1))
    want = np.repeat(np.repeat(x, 2, axis=1), 3, axis=2)
    np.testing.assert_array_equal(UpSampling2D((2, 3)).apply({}, x), want)
    np.testing.assert_array_equal(Permute((3, 1, 2)).apply({}, x), x.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(RepeatVector(3).apply({}, x1[:, 0]), np.stack([x1[:, 0]] * 3, 1))
    with pytest.raises(ShapeError, match="leaves nothing"):
        Cropping1D((3, 2)).apply({}, x1)
    with pytest.raises(ConfigError, match="permutation of 1..2"):
        Permute((0, 1))
    with pytest.raises(ShapeError, match="rank 4"):
        UpSampling2D().apply({}, x1)


def test_bilinear_upsampling_relu_unit_norm_as_keras():
    # The expected numbers are Keras 3.15's outputs for the same inputs.
    from jaxnets.layers import LeakyReLU, ReLU, UnitNormalization, UpSampling2D

    x = np.arange(6, dtype=np.float32).reshape(1, 2, 3, 1)
    keras_bilinear = [
        [0.0, 0.25, 0.75, 1.25, 1.75, 2.0],
        [0.75, 1.0, 1.5, 2.0, 2.5, 2.75],
        [2.25, 2.5, 3.0, 3.5, 4.0, 4.25],
        [3.0, 3.25, 3.75, 4.25, 4.75, 5.0],
    ]
    up = UpSampling2D(2, interpolation="bilinear").apply({}, x)[0, :, :, 0]
    np.testing.assert_allclose(up, keras_bilinear, rtol=1e-6)
    relu = ReLU(max_value=1.0, negative_slope=0.5, threshold=0.5)
    got = relu.apply({}, jnp.array([-1.0, 0.25, 0.5, 0.75, 2.0]))
    np.testing.assert_allclose(got, [-0.75, -0.125, 0.0, 0.75, 1.0])
    np.testing.assert_allclose(LeakyReLU().apply({}, jnp.array([-2.0, 3.0])), [-0.6, 3.0])
    v = jnp.array([[3.0, 4.0], [0.0, 0.0], [1e-7, 0.0], [1e-13, 0.0]])
    np.testing.assert_allclose(
        UnitNormalization().apply({}, v),
        [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0], [0.1, 0.0]],
        rtol=1e-6,
    )
    with pytest.raises(ConfigError, match="threshold"):
        ReLU(threshold=-0.3)  # Keras rejects it too


def test_spatial_dropout_and_gaussian_noise_train_only():
    from jaxnets.layers import GaussianNoise, SpatialDropout1D, SpatialDropout2D

    x = jnp.ones((64, 6, 5, 32))
    rngs = {"dropout": jax.random.key(0)}
    np.testing.assert_array_equal(SpatialDropout2D(0.25).apply({}, x), x)  # eval: identity
    y = SpatialDropout2D(0.25).apply({}, x, train=True, rngs=rngs)
    np.testing.assert_allclose(np.unique(np.asarray(y)), [0.0, 4 / 3])  # kept / (1 - rate)
    np.testing.assert_array_equal(y, jnp.broadcast_to(y[:, :1, :1], y.shape))  # whole channels
    assert abs(float((y == 0).mean()) - 0.25) < 0.04
    y1 = SpatialDropout1D(0.5).apply({}, x[:, 0], train=True, rngs=rngs)
    np.testing.assert_array_equal(y1, jnp.broadcast_to(y1[:, :1], y1.shape))
    with pytest.raises(ShapeError, match="SpatialDropout1D expects inputs of rank 3"):
        SpatialDropout1D(0.5).apply({}, x)
    np.testing.assert_array_equal(GaussianNoise(0.3).apply({}, x), x)
    noise = GaussianNoise(0.3).apply({}, x, train=True, rngs=rngs) - x
    assert abs(float(noise.std()) - 0.3) < 0.01 and abs(float(noise.mean())) < 0.01


def test_new_layers_train_save_and_load_in_sequential(rng, tmp_path):
    import jaxnets
    from jaxnets import layers

    x = rng.normal(size=(8, 6, 6, 1)).astype(np.float32)
    model = jaxnets.Sequential(
        [
            layers.ZeroPadding2D(1, input_shape=(6, 6, 1)),
            layers.Conv2D(2, 3, strides=2),
            layers.LeakyReLU(0.2),
            layers.SpatialDropout2D(0.2),
            layers.GaussianNoise(0.1),
            layers.UpSampling2D(2, interpolation="bilinear"),
            layers.Cropping2D(1),
            layers.Conv2D(1, 3, padding="same"),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(x, x[:, 1:5, 1:5], epochs=2, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.predict(x, verbose=0).shape == (8, 4, 4, 1)
    model.save(tmp_path / "m")
    again = jaxnets.load_model(tmp_path / "m")
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))


def test_time_distributed_matches_a_per_step_loop(rng):
    from jaxnets.layers import BatchNormalization, Conv2D, TimeDistributed

    x = jnp.asarray(rng.normal(size=(2, 3, 5, 5, 1)), jnp.float32)
    layer = TimeDistributed(Conv2D(2, 3))
    variables = layer.init(jax.random.key(0), x)
    conv = Conv2D(2, 3)
    inner = {"params": variables["params"]["layer"]}
    want = jnp.stack([conv.apply(inner, x[:, t]) for t in range(3)], axis=1)
    np.testing.assert_allclose(layer.apply(variables, x), want, rtol=1e-6, atol=1e-6)
    # train mode reaches the wrapped layer: batch statistics over all B * T rows, as Keras.
    bn = TimeDistributed(BatchNormalization())
    v = bn.init(jax.random.key(0), x)
    y, _ = bn.apply(v, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(y.mean(), 0.0, atol=1e-5)
    with pytest.raises(ShapeError, match="rank >= 3"):
        layer.init(jax.random.key(0), x[:, 0, 0, 0])


@pytest.mark.parametrize("layer", [BatchNormalization, LayerNormalization])
def test_normalization_of_integer_inputs_is_float(layer):
    # jaxnets normalized int32 features in integer arithmetic and returned int32: the
    # BatchNormalization of [[0, 1, 2, 3], [4, 5, 6, 7]] in train mode gave zeros, Keras
    # -0.99987507 everywhere in the first row (and +0.99987507 in the second).
    x = jnp.arange(8, dtype=jnp.int32).reshape(2, 4)
    ln = layer()
    variables = ln.init(jax.random.key(0), x)
    y, _ = ln.apply(variables, x, train=True, mutable=["batch_stats"])
    xf = np.arange(8.0).reshape(2, 4)
    axis = 0 if layer is BatchNormalization else 1
    mean, var = xf.mean(axis, keepdims=True), xf.var(axis, keepdims=True)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, (xf - mean) / np.sqrt(var + 1e-3), rtol=1e-5)


def test_group_normalization_as_keras():
    # Expected: Keras 3.15's GroupNormalization(groups=2) of the same input (first example).
    from jaxnets.layers import GroupNormalization

    x = jnp.arange(2 * 4 * 6, dtype=jnp.float32).reshape(2, 4, 6) / 10
    row = [-1.47817, -1.33036, -1.18254]
    keras_first = [
        row * 2,
        [-0.59127, -0.44345, -0.29563] * 2,
        [0.29563, 0.44345, 0.59127] * 2,
        [1.18254, 1.33036, 1.47817] * 2,
    ]
    gn = GroupNormalization(groups=2)
    variables = gn.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, variables) == {"params": {"scale": (6,), "bias": (6,)}}
    np.testing.assert_allclose(gn.apply(variables, x)[0], keras_first, atol=2e-5)
    with pytest.raises(ShapeError, match="groups divide"):
        GroupNormalization(groups=4).init(jax.random.key(0), x)


@pytest.mark.parametrize("impl", ["im2col", "xla"])
def test_depthwise_and_separable_convolutions_as_keras(impl):
    # Expected: Keras 3.15 DepthwiseConv2D(2, strides=2, padding="same",
    # depth_multiplier=2, use_bias=False) with this kernel; output channel c * 2 + m.
    from jaxnets.layers import DepthwiseConv2D, SeparableConv2D

    x = jnp.arange(18, dtype=jnp.float32).reshape(1, 3, 3, 2)
    kernel = jnp.arange(16, dtype=jnp.float32).reshape(2, 2, 2, 2) / 10
    keras_out = [
        [[15.2, 16.8, 21.6, 23.6], [8.0, 9.4, 12.0, 13.6]],
        [[5.6, 8.2, 11.6, 14.4], [0.0, 1.6, 3.4, 5.1]],
    ]
    dw = DepthwiseConv2D(
        2, strides=2, padding="same", depth_multiplier=2, use_bias=False, impl=impl
    )
    got = dw.apply({"params": {"depthwise_kernel": kernel}}, x)
    np.testing.assert_allclose(got[0], keras_out, rtol=1e-5, atol=1e-5)
    # Separable: the same depthwise step, then a 1x1 product and the bias.
    point = jnp.arange(8, dtype=jnp.float32).reshape(1, 1, 4, 2) / 10
    sep = SeparableConv2D(2, 2, strides=2, padding="same", depth_multiplier=2, impl=impl)
    params = {"depthwise_kernel": kernel, "pointwise_kernel": point, "bias": jnp.array([1.0, -1.0])}
    want = np.asarray(keras_out)[None] @ np.asarray(point[0, 0]) + np.array([1.0, -1.0])
    np.testing.assert_allclose(sep.apply({"params": params}, x), want, rtol=1e-5)


def test_separable_conv_weights_in_keras_order(rng):
    import jaxnets
    from jaxnets.layers import SeparableConv2D

    model = jaxnets.Sequential([SeparableConv2D(4, 3, depth_multiplier=2, input_shape=(5, 5, 3))])
    model.compile(optimizer="sgd", loss="mse")
    # Keras: depthwise_kernel, pointwise_kernel, bias.
    assert [w.shape for w in model.get_weights()] == [(3, 3, 3, 2), (1, 1, 6, 4), (4,)]


@pytest.mark.parametrize("impl", ["im2col", "xla"])
def test_grouped_convolution_as_xla_feature_groups(rng, impl):
    # Keras Conv2D(groups=G): kernel (kh, kw, C / G, F); checked against Keras 3.15 with
    # copied weights during the hunt, here against XLA's feature_group_count.
    from jax import lax

    x = jnp.asarray(rng.normal(size=(2, 7, 8, 6)), jnp.float32)
    layer = Conv2D(6, 3, strides=2, padding="same", groups=3, use_bias=False, impl=impl)
    variables = layer.init(jax.random.key(0), x)
    kernel = variables["params"]["kernel"]
    assert kernel.shape == (3, 3, 2, 6)
    want = lax.conv_general_dilated(
        x,
        kernel,
        (2, 2),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=3,
    )
    np.testing.assert_allclose(layer.apply(variables, x), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="must divide filters"):
        Conv2D(5, 3, groups=2)
    with pytest.raises(ShapeError, match="must divide the input channels"):
        Conv2D(4, 3, groups=4).init(jax.random.key(0), x)


# Keras 3.15's activations of [-2, -0.3, 0.7, 3] by their names (jaxnets did not know them).
KERAS_ACTIVATIONS = {
    "hard_silu": [-0.333333, -0.135, 0.431667, 3.0],
    "hard_swish": [-0.333333, -0.135, 0.431667, 3.0],
    "log_sigmoid": [-2.126928, -0.854355, -0.403186, -0.048587],
    "hard_tanh": [-1.0, -0.3, 0.7, 1.0],
    "celu": [-0.864665, -0.259182, 0.7, 3.0],
    "tanh_shrink": [-1.035972, -0.008687, 0.095632, 2.004945],
    "soft_shrink": [-1.5, 0.0, 0.2, 2.5],
    "hard_shrink": [-2.0, 0.0, 0.7, 3.0],
    "squareplus": [0.414214, 0.861187, 1.409481, 3.302776],
    "sparse_plus": [0.0, 0.1225, 0.7225, 3.0],
    "glu": [-1.336376, -0.285772],
}


@pytest.mark.parametrize("name", sorted(KERAS_ACTIVATIONS))
def test_keras_3_activation_names(name):
    from jaxnets.layers import Activation

    x = jnp.array([-2.0, -0.3, 0.7, 3.0])
    got = Activation(name).apply({}, x)
    np.testing.assert_allclose(got, KERAS_ACTIVATIONS[name], rtol=1e-5, atol=1e-6)
