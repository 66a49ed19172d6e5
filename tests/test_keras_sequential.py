"""Sequential: the Keras snippet, stable softmax losses, and Linen behaviour."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnets
from jaxnets import data, layers
from jaxnets.errors import ConfigError
from jaxnets.keras import Sequential
from jaxnets.training import create_train_state


def keras_snippet(input_shape, padding="valid"):
    # The TensorFlow tutorial's CNN; padding='same' only for inputs too small for 'valid'.
    return jaxnets.Sequential([
        layers.Conv2D(32, (3, 3), activation='relu', padding=padding, input_shape=input_shape),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation='relu', padding=padding),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(10, activation='softmax')])  # fmt: skip


@pytest.mark.slow
def test_keras_snippet_learns_digits(digits):
    x_train = digits.x_train.reshape(-1, 8, 8, 1) / 16.0
    x_test = digits.x_test.reshape(-1, 8, 8, 1) / 16.0
    model = keras_snippet((8, 8, 1), padding="same")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, digits.y_train, epochs=3, verbose=0)
    loss, accuracy = model.evaluate(x_test, digits.y_test, verbose=2)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert accuracy > 0.6 and loss < 2.0  # chance: accuracy 0.1, loss ln(10) = 2.3
    probs = model.predict(x_test[:5])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)  # probabilities, as Keras


@pytest.mark.slow
def test_keras_snippet_runs_unchanged_on_28x28():
    ds = data.load("synthetic_image", n=320, height=28, width=28, num_classes=4)
    model = keras_snippet((28, 28, 1))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(ds.x_train, ds.y_train, epochs=3, verbose=0)
    loss, accuracy = model.evaluate(ds.x_test, ds.y_test, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert accuracy > 0.9


def _extreme_model(kind):
    units, act = (2, "softmax") if kind != "binary" else (1, "sigmoid")
    model = Sequential([layers.Dense(units, activation=act, input_shape=(1,))])
    model.build()
    w = np.array([[1000.0, -1000.0]]) if units == 2 else np.array([[1000.0]])
    model.set_weights([w, np.zeros(units)])  # Keras order: kernel, bias
    return model


@pytest.mark.parametrize(
    "loss, y",
    [
        ("sparse_categorical_crossentropy", np.array([1])),
        ("categorical_crossentropy", np.array([[0.0, 1.0]])),
        ("binary_crossentropy", np.array([[0.0]])),
    ],
)
def test_final_softmax_is_trained_from_logits(loss, y):
    kind = "binary" if loss.startswith("binary") else "softmax"
    model = _extreme_model(kind)
    model.compile(optimizer="sgd", loss=loss)
    x = np.ones((1, 1), np.float32)
    # the probability of the true class underflows: log(softmax) would be -inf
    probs = model.predict(x)
    with np.errstate(divide="ignore"):
        assert np.log(probs[0, 1] if kind == "softmax" else 1 - probs[0, 0]) == -np.inf
    value = model.evaluate(x, y, verbose=0)
    true_loss = 2000.0 if kind == "softmax" else 1000.0  # the exact -log-likelihood
    assert np.isfinite(value) and value == pytest.approx(true_loss, rel=1e-6)
    # gradients are finite too, so training moves the weights
    before = model.get_weights()
    model.train_on_batch(x, y)
    after = model.get_weights()
    assert all(np.isfinite(w).all() for w in after)
    assert any((a != b).any() for a, b in zip(before, after, strict=True))
    assert int(model.state.skipped) == 0


def test_activation_layer_and_linear_outputs_are_handled():
    model = Sequential([layers.Dense(3, input_shape=(2,)), layers.Activation("softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert len(model._keras.compile_kwargs["train_module"].layers) == 1
    np.testing.assert_allclose(model.predict(np.ones((2, 2))).sum(axis=1), 1.0, rtol=1e-6)
    # without a final softmax, outputs are logits (the jaxnets convention)
    logits = Sequential([layers.Dense(3, input_shape=(2,))])
    logits.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert logits._keras.compile_kwargs["train_module"] is logits
    assert logits._keras.compile_kwargs["loss"].from_logits


def test_sequential_is_a_linen_module():
    seq = Sequential([layers.Dense(4, activation="relu"), layers.Dropout(0.5), layers.Dense(2)])
    x = jnp.ones((3, 5))
    variables = seq.init(jax.random.key(0), x)
    assert sorted(variables["params"]) == ["layers_0", "layers_2"]
    train = seq.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
    assert train.shape == (3, 2)
    np.testing.assert_array_equal(seq.apply(variables, x), seq.apply(variables, x, train=False))

    class Outer(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            return Sequential([layers.Dense(3), jax.nn.relu])(x, train=train) + 1.0

    out = Outer().apply(Outer().init(jax.random.key(0), x), x)
    assert out.shape == (3, 3) and bool((out >= 1.0).all())
    # and the functional core takes it as it is
    state = create_train_state(seq, "adam", x, loss="mse", metrics=())
    assert state.call_kwargs == ("train", "mask")
    assert hash(seq) == hash(
        Sequential([layers.Dense(4, activation="relu"), layers.Dropout(0.5), layers.Dense(2)])
    )


def test_add_pop_and_build():
    model = Sequential()
    model.add(layers.Dense(8, input_shape=(4,)))
    model.add(layers.Dense(2))
    model.add(layers.Dense(3))
    model.pop()
    assert len(model.layers) == 2 and model.count_params() == 4 * 8 + 8 + 8 * 2 + 2
    with pytest.raises(ConfigError, match="before the model is built"):
        model.add(layers.Dense(1))
    unbuilt = Sequential([layers.Dense(2)])
    with pytest.raises(ConfigError, match="build"):
        unbuilt.summary()
    unbuilt.build((None, 7))
    assert unbuilt.count_params() == 16
    unbuilt.stop_training = True  # Keras-side attributes can be set on the frozen module
    assert unbuilt.stop_training


@pytest.mark.slow
def test_mask_from_embedding_reaches_the_lstm():
    model = Sequential([
        layers.Embedding(10, 4, mask_zero=True, input_shape=(6,)),
        layers.LSTM(5),
        layers.Dense(2),
    ])  # fmt: skip
    model.build()
    tokens = np.array([[3, 4, 5, 0, 0, 0], [3, 4, 5, 6, 7, 0]], np.int32)
    out = model.predict(tokens)
    # the padded steps are skipped: same output as the unpadded sequence
    short = Sequential([
        layers.Embedding(10, 4, mask_zero=True, input_shape=(3,)),
        layers.LSTM(5),
        layers.Dense(2),
    ])  # fmt: skip
    short.build()
    short.set_weights(model.get_weights())
    np.testing.assert_allclose(out[0], short.predict(tokens[:1, :3])[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.bool_])
def test_integer_features_are_cast_to_float32_as_in_keras(dtype):
    """Without input_shape the model builds from the data: integer pixels or features
    are features (float32), not ids; casting the kernels to them would zero them."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2 if dtype is np.bool_ else 16, size=(64, 4, 4, 1)).astype(dtype)
    y = (x.reshape(64, -1).astype(np.float32).sum(1) > x.size / 128).astype(np.int32)
    model = Sequential([layers.Conv2D(4, 3), layers.Flatten(), layers.Dense(2)])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", learning_rate=0.1)
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]
    kernel = np.asarray(model.state.params["layers_2"]["kernel"])
    assert kernel.dtype == np.float32 and np.any(kernel != np.round(kernel))
    as_float = model.predict(x[:4].astype(np.float32), verbose=0)
    assert as_float.dtype == np.float32
    np.testing.assert_array_equal(model.predict(x[:4], verbose=0), as_float)


def test_dense_and_conv_promote_integer_inputs():
    x = jnp.arange(12, dtype=jnp.int32).reshape(1, 2, 2, 3)
    for layer in (
        layers.Dense(2, kernel_initializer="ones"),
        layers.Conv2D(2, 1, kernel_initializer="ones"),
    ):
        variables = layer.init(jax.random.key(0), x)
        out = layer.apply(variables, x)
        assert out.dtype == jnp.float32
        np.testing.assert_array_equal(out, layer.apply(variables, x.astype(jnp.float32)))


def test_calling_the_model_applies_it_as_in_keras():
    model = Sequential([layers.Dense(2, activation="relu", input_shape=(3,)), layers.Dense(4)])
    x = np.random.default_rng(0).random((5, 3)).astype(np.float32)
    out = model(x)  # Keras: y = model(x) right after building
    assert out.shape == (5, 4)
    np.testing.assert_allclose(out, model.predict(x, verbose=0), rtol=1e-6)
    # Inside a Flax apply it is still an ordinary Linen module.
    variables = model._keras.variables
    np.testing.assert_allclose(model.apply(variables, x), out, rtol=1e-6)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_a_mask_stops_at_layers_that_do_not_support_masking(padding):
    """Keras drops an Embedding's mask at a Conv1D (and warns): the pooling after it averages
    every step. A Dense passes the mask on, as Keras's Dense does."""
    x = np.array([[3, 4, 5, 6, 7, 8, 0, 0, 0, 0]] * 2, np.int32)

    def stack(mask_zero):
        return [
            layers.Embedding(10, 4, mask_zero=mask_zero, input_shape=(10,)),
            layers.Conv1D(4, 3, padding=padding),
            layers.GlobalAveragePooling1D(),
            layers.Dense(1),
        ]

    masked, plain = Sequential(stack(True)), Sequential(stack(False))
    plain.build()
    with pytest.warns(UserWarning, match="Conv1D does not support masking"):
        masked.build()
        masked.set_weights(plain.get_weights())
        out = masked.predict(x, verbose=0)
    np.testing.assert_allclose(out, plain.predict(x, verbose=0), rtol=1e-6)

    dense = Sequential(
        [layers.Embedding(10, 4, mask_zero=True, input_shape=(10,)), layers.Dense(3),
         layers.GlobalAveragePooling1D()]
    )  # fmt: skip
    dense.build()
    emb, kernel, bias = dense.get_weights()
    steps = emb[x[0]] @ kernel + bias
    np.testing.assert_allclose(dense.predict(x, verbose=0)[0], steps[:6].mean(0), rtol=1e-5)


def test_trainable_false_freezes_as_in_keras():
    """The Keras transfer-learning idiom: base.trainable = False, then compile. The base's
    parameters and BatchNorm statistics stay as they were, the head trains, and summary counts
    the frozen parameters as non-trainable."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    base = Sequential([layers.Dense(8, activation="relu", input_shape=(6,)),
                       layers.BatchNormalization()])  # fmt: skip
    model = Sequential([base, layers.Dense(2)])
    model.build((None, 6))
    base.trainable = False
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", learning_rate=0.05)
    before = model.get_weights()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    after = model.get_weights()
    n_base = 6  # Dense kernel, bias; BN gamma, beta, moving mean, variance
    for a, b in zip(before[:n_base], after[:n_base], strict=True):
        np.testing.assert_array_equal(a, b)  # frozen, statistics included (inference mode)
    assert not np.array_equal(before[n_base], after[n_base])  # the head trained
    from jaxnets.keras.summary import summarize

    summary = summarize(model)
    assert summary.trainable_params == 8 * 2 + 2
    assert summary.non_trainable_params == (6 * 8 + 8) + 4 * 8

    # A layer's own flag, given to its constructor, freezes only that layer.
    single = Sequential([layers.Dense(4, input_shape=(6,), trainable=False), layers.Dense(2)])
    single.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", learning_rate=0.1)
    first = single.get_weights()
    single.fit(x, y, epochs=1, verbose=0)
    np.testing.assert_array_equal(first[0], single.get_weights()[0])
    assert not np.array_equal(first[2], single.get_weights()[2])


def test_an_embedding_mask_leaves_padded_steps_out_of_loss_and_metrics():
    """Keras: per-step outputs that carry an Embedding(mask_zero=True) mask are scored on the
    real steps only, every step alike (checked against Keras 3: loss and accuracy equal)."""
    rng = np.random.default_rng(0)
    x = rng.integers(1, 20, size=(30, 8))
    for i in range(30):
        x[i, rng.integers(2, 8) :] = 0
    y = (x % 3).astype(np.int32)
    model = Sequential(
        [layers.Embedding(20, 6, mask_zero=True, input_shape=(8,)),
         layers.GRU(4, return_sequences=True), layers.Dense(3, activation="softmax")]
    )  # fmt: skip
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    loss, accuracy = model.evaluate(x, y, verbose=0, batch_size=64)
    p = model.predict(x, verbose=0)
    real = x != 0
    nll = -np.log(np.take_along_axis(p, y[..., None], -1)[..., 0])
    assert loss == pytest.approx(nll[real].mean(), rel=1e-5)
    assert accuracy == pytest.approx((p.argmax(-1) == y)[real].mean(), rel=1e-6)
    # Without the mask the padded steps (label 0, an easy guess) would count too.
    assert accuracy != pytest.approx((p.argmax(-1) == y).mean(), rel=1e-3)
