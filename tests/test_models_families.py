"""Family-specific behaviour: flattening, BatchNorm state, masks, pooling, autoencoders."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets import models
from jaxnets.errors import DTypeError, ShapeError
from jaxnets.models.transformer import sinusoidal_positions


@pytest.fixture(autouse=True)
def fast_random_compiles():
    # Random ops compile ~10x faster without threefry partitioning on CPU.
    with jax.threefry_partitionable(False):
        yield


def init(model, x, seed=0):
    return jax.jit(model.init)(jax.random.key(seed), x)


def test_mlp_flattens_images_and_vectors_alike():
    model = models.get("mlp_784_64_64_10")
    x = model.example_input(3)
    v = init(model, x)
    np.testing.assert_allclose(
        model.apply(v, x), model.apply(v, x.reshape(3, 784)), rtol=1e-6, atol=1e-6
    )
    assert v["params"]["dense_0"]["kernel"].shape == (784, 64)


def test_cnn_rejects_images_without_channel_axis():
    model = models.get("cnn")
    with pytest.raises(ShapeError, match=r"x\[\.\.\., None\]"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 28, 28)))


@pytest.mark.parametrize("activation, side", [("relu", 14), ("relu", 15), ("tanh", 14)])
def test_cnn_equals_conv_activation_pool_written_out(activation, side):
    # The CNN adds the bias and applies ReLU after the pool (they commute) and, on
    # CPU, computes only the convolution outputs the pool reads (side 15: the first
    # pool drops a row and a column); the Keras order is the oracle.
    import flax.linen as nn

    from jaxnets import layers

    class KerasOrder(nn.Module):
        @nn.compact
        def __call__(self, x):
            for i, width in enumerate((8, 16)):
                x = layers.Conv2D(width, 3, activation=activation, name=f"conv_{i}")(x)
                x = layers.MaxPooling2D(2)(x)
            return layers.Dense(10, name="logits")(layers.Flatten()(x))

    model = models.get("cnn", filters=(8, 16), activation=activation, input_shape=(side, side, 1))
    x = jax.random.normal(jax.random.key(1), (4, side, side, 1))
    params = model.init(jax.random.key(0), x)["params"]
    oracle_init = KerasOrder().init(jax.random.key(0), x)["params"]
    assert jax.tree.structure(params) == jax.tree.structure(oracle_init)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(oracle_init), strict=True):
        np.testing.assert_array_equal(got, want)  # the same initial weights, too
    # Nonzero biases: the reordered block adds them after the pool.
    for i, name in enumerate(("conv_0", "conv_1")):
        bias = jax.random.normal(jax.random.key(2 + i), params[name]["bias"].shape)
        params = {**params, name: {**params[name], "bias": bias}}

    def loss(module, params):
        return jnp.sum(jnp.sin(module.apply({"params": params}, x)))

    with jax.default_matmul_precision("highest"):  # GPUs default to TF32
        want, got = KerasOrder().apply({"params": params}, x), model.apply({"params": params}, x)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        grads = jax.grad(loss, argnums=1)
        for g, w in zip(
            jax.tree.leaves(grads(model, params)),
            jax.tree.leaves(grads(KerasOrder(), params)),
            strict=True,
        ):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_pooled_conv_block_impls_share_parameters_and_values():
    from jaxnets.models.cnn import PooledConvReLU

    x = jax.random.normal(jax.random.key(1), (2, 13, 13, 3))
    fused, layered = PooledConvReLU(4, 3, impl="im2col"), PooledConvReLU(4, 3, impl="xla")
    v = fused.init(jax.random.key(0), x)
    for got, want in zip(
        jax.tree.leaves(v), jax.tree.leaves(layered.init(jax.random.key(0), x)), strict=True
    ):
        np.testing.assert_array_equal(got, want)
    v = {"params": {**v["params"], "bias": jnp.linspace(-1, 1, 4)}}
    with jax.default_matmul_precision("highest"):
        got, want = fused.apply(v, x), layered.apply(v, x)
    assert got.shape == (2, 5, 5, 4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ShapeError, match="NHWC"):
        fused.init(jax.random.key(0), jnp.ones((13, 13, 3)))


def test_cnn1d_adds_a_channel_axis_and_reads_125_features():
    model = models.get("cnn1d")
    x = model.example_input(2)
    v = init(model, x)
    assert v["params"]["logits"]["kernel"].shape == (125, 10)  # 5 steps * 25 channels
    np.testing.assert_allclose(model.apply(v, x), model.apply(v, x[..., None]), rtol=1e-6)


@pytest.mark.parametrize("name", ["convnet_bn", "resnet_tiny"])
def test_batchnorm_updates_stats_in_train_mode_only(name):
    model = models.get(name, input_shape=(8, 8, 3))
    x = model.example_input(4)
    v = init(model, x)
    train = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    out, updates = train(v, x)
    moved = jax.tree.map(
        lambda a, b: bool(jnp.any(a != b)), v["batch_stats"], updates["batch_stats"]
    )
    assert all(jax.tree.leaves(moved))
    # Eval mode uses the running statistics: each row's logits ignore the rest of the batch.
    evaluate = jax.vmap(jax.jit(model.apply), in_axes=(None, 0))  # one row at a time
    full = jax.jit(model.apply)(v, x)
    np.testing.assert_allclose(evaluate(v, x[:, None])[:, 0], full, rtol=1e-5, atol=1e-5)
    assert out.shape == full.shape


def test_batchnorm_running_mean_follows_keras_momentum():
    model = models.get("convnet_bn", filters=(4,), strides=(1,), input_shape=(6, 6, 1))
    x = model.example_input(5)
    v = init(model, x)
    _, updates = model.apply(v, x, train=True, mutable=["batch_stats"])
    kernel = v["params"]["conv_0"]["kernel"]  # (3, 3, 1, 4), 'same' padding, no bias
    feats = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    batch_mean = feats.mean(axis=(0, 1, 2))
    # running = 0.99 * 0 + 0.01 * batch mean
    np.testing.assert_allclose(updates["batch_stats"]["bn_0"]["mean"], 0.01 * batch_mean, atol=1e-6)


RECURRENT = [
    dict(cell="rnn"),
    dict(cell="lstm"),
    dict(cell="gru", num_layers=2),
    dict(cell="lstm", bidirectional=True),
]


@pytest.mark.parametrize("config", RECURRENT, ids=lambda c: "-".join(map(str, c.values())))
def test_recurrent_mask_equals_the_unpadded_sequence(config):
    model = models.get("lstm", hidden_size=8, input_shape=(6, 3), **config)
    x = model.example_input(2)
    v = init(model, x)
    mask = jnp.arange(6)[None] < jnp.array([[6], [4]])  # row 1: 4 valid steps
    garbage = x.at[1, 4:].set(50.0)
    # Full float32 matmuls: GPUs default to TF32, whose rounding differs between shapes.
    apply = jax.jit(model.apply)
    with jax.default_matmul_precision("highest"):
        padded = apply(v, garbage, mask=mask)
        same = apply(v, x, mask=mask)
        alone = apply(v, x[1:, :4])  # oracle: the same row, truncated, no mask
    np.testing.assert_allclose(padded, same, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(padded[1:], alone, rtol=1e-5, atol=1e-5)


def test_recurrent_options_shapes():
    tagger = models.get("gru_tagger", hidden_size=4, input_shape=(5, 2))
    x = tagger.example_input(3)
    assert tagger.task == "tag"
    assert jax.eval_shape(lambda: tagger.apply(init(tagger, x), x)).shape == (3, 5, 10)
    bi = models.get("bilstm", hidden_size=4, input_shape=(5, 2), return_sequences=True)
    assert jax.eval_shape(lambda: bi.apply(init(bi, x), x)).shape == (3, 5, 10)
    text = models.get("lstm_text", hidden_size=4)
    tokens = text.example_input(2)
    assert tokens.dtype == jnp.int32
    assert init(text, tokens)["params"]["embed"]["embedding"].shape == (100, 32)
    with pytest.raises(DTypeError, match="vocab_size"):
        jax.eval_shape(models.get("lstm").init, jax.random.key(0), tokens)


@pytest.mark.parametrize("name", ["transformer", "transformer_text"])
def test_transformer_padding_never_changes_the_logits(name):
    # transformer: learned positions + mean pooling; transformer_text: sinusoidal + [CLS].
    model = models.get(name, num_layers=1, d_model=8, num_heads=2, mlp_dim=16)
    x = model.example_input(2)
    v = init(model, x)
    mask = jnp.arange(16)[None] < jnp.array([[16], [7]])
    other = models.example_input(model, 2, seed=5)  # different values at the padded steps
    changed = jnp.where(mask.reshape(2, 16, *([1] * (x.ndim - 2))), x, other)
    apply = jax.jit(model.apply)
    with jax.default_matmul_precision("highest"):  # GPUs default to TF32
        padded = apply(v, changed, mask=mask)
        same = apply(v, x, mask=mask)
        alone = apply(v, x[1:, :7])  # positions are absolute: truncation is the oracle
    np.testing.assert_allclose(padded, same, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(padded[1:], alone, rtol=1e-4, atol=1e-5)


def test_sinusoidal_positions_closed_form():
    table = sinusoidal_positions(50, 8)
    pos, i = 37, 2  # dims 2i and 2i+1 share the frequency 1 / 10000^(2i/d)
    rate = 1 / 10000 ** (2 * i / 8)
    np.testing.assert_allclose(table[pos, 2 * i], math.sin(pos * rate), rtol=1e-6)
    np.testing.assert_allclose(table[pos, 2 * i + 1], math.cos(pos * rate), rtol=1e-6)


def test_transformer_dropout_uses_the_dropout_rng():
    model = models.get("transformer", num_layers=1, d_model=8, num_heads=2, dropout_rate=0.5)
    x = model.example_input(2)
    v = init(model, x)
    train = jax.jit(lambda v, x, key: model.apply(v, x, train=True, rngs={"dropout": key}))
    a, b = train(v, x, jax.random.key(1)), train(v, x, jax.random.key(2))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(train(v, x, jax.random.key(1)), a)  # same key, same mask


@pytest.mark.parametrize("name", ["autoencoder_dense", "autoencoder_conv"])
def test_autoencoder_encode_decode_compose_to_call(name):
    model = models.get(name, input_shape=(8, 8, 1), latent_dim=3)
    x = model.example_input(2)
    v = init(model, x)
    code = jax.jit(lambda v, x: model.apply(v, x, method="encode"))(v, x)
    assert code.shape == (2, 3)
    decoded = jax.jit(lambda v, z: model.apply(v, z, method="decode"))(v, code)
    np.testing.assert_allclose(decoded, jax.jit(model.apply)(v, x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ShapeError, match="input_shape"):
        model.apply(v, jnp.zeros((2, 4, 4, 1)))
