"""Model(module): the Keras API over the functional core."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnets import layers
from jaxnets.callbacks import History
from jaxnets.errors import ConfigError, DataError, ShapeError
from jaxnets.keras import Model, Sequential, weight_order
from jaxnets.training import create_train_state, evaluate, fit, train_step


class SmallNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Dense(16)(x))
        x = nn.Dropout(0.2, deterministic=not train)(x)
        return nn.Dense(3)(x)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1).astype(np.int32)
    return x, y


def _leaves(tree):
    return [np.asarray(a) for a in jax.tree.leaves(tree)]


def test_fit_is_bitwise_the_functional_fit(data):
    x, y = data
    state = create_train_state(
        SmallNet(), "adam", x[:1], learning_rate=1e-2,
        loss="sparse_categorical_crossentropy", metrics=["accuracy"], seed=0,
    )  # fmt: skip
    state, functional_history = fit(state, (x, y), epochs=3, batch_size=32, seed=0, verbose=0)
    model = Model(SmallNet())
    model.compile(
        optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
        learning_rate=1e-2,
    )  # fmt: skip
    history = model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    for a, b in zip(_leaves(state.params), _leaves(model.state.params), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_leaves(state.opt_state), _leaves(model.state.opt_state), strict=True):
        np.testing.assert_array_equal(a, b)
    assert history.history["loss"] == functional_history["loss"]
    assert history.epoch == [0, 1, 2]
    assert history.params["epochs"] == 3 and history.params["steps"] == 4
    assert model.history is history


def test_evaluate_return_conventions(data):
    x, y = data
    plain = Model(nn.Dense(3))
    plain.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    loss = plain.evaluate(x, y, verbose=0)
    assert isinstance(loss, float)
    assert plain.evaluate(x, y, verbose=0, return_dict=True) == {"loss": loss}
    model = Model(nn.Dense(3))
    model.compile(
        optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy", "f1"]
    )
    values = model.evaluate(x, y, verbose=0)
    assert isinstance(values, list) and len(values) == 3
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert list(logs) == ["loss", "accuracy", "f1"] == model.metrics_names
    assert values == list(logs.values())
    # the same numbers as the functional evaluate on the state
    ref = evaluate(model.state, (x, y), batch_size=32)
    assert logs == {k: ref[k] for k in logs}
    # sample weights: the weighted mean of per-example losses
    w = np.where(y == 0, 2.0, 1.0).astype(np.float32)
    weighted = model.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)["loss"]
    per = -jax.nn.log_softmax(model.predict(x))[np.arange(len(y)), y]
    assert weighted == pytest.approx(float(np.sum(per * w) / len(y)), rel=1e-5)


def test_evaluate_verbose_prints(data, capsys):
    x, y = data
    model = Model(nn.Dense(3))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.evaluate(x, y, verbose=2)
    assert "loss:" in capsys.readouterr().out


def test_on_batch_methods(data):
    x, y = data
    model = Model(nn.Dense(3))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    before = model.test_on_batch(x[:10], y[:10], return_dict=True)
    expected_state, _ = jax.jit(train_step)(
        model.state, {"x": x[:10], "y": y[:10], "mask": np.ones(10, np.float32)}
    )
    expected = _leaves(expected_state.params)
    loss, acc = model.train_on_batch(x[:10], y[:10])
    assert loss == pytest.approx(before["loss"], rel=1e-6) and acc == before["accuracy"]
    for a, b in zip(expected, _leaves(model.state.params), strict=True):
        np.testing.assert_array_equal(a, b)
    out = model.predict_on_batch(x[:4])
    np.testing.assert_allclose(out, model.predict(x[:4]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(model(x[:4])), out, rtol=1e-6)


def test_state_out_and_back(data):
    x, y = data
    model = Model(nn.Dense(3))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", learning_rate=0.1)
    model.fit(x, y, epochs=1, verbose=0)
    state = model.state
    step = jax.jit(model.train_step)
    batch = {"x": x[:8], "y": y[:8], "mask": np.ones(8, np.float32)}
    new_state, _ = step(state, batch)
    model.state = new_state
    assert int(model.state.step) == int(state.step) + 1
    with pytest.raises(ConfigError, match="TrainState"):
        model.state = {"params": 1}


def test_weights_round_trip_and_checks():
    model = Sequential([layers.Dense(4, input_shape=(3,)), layers.BatchNormalization()])
    weights = model.get_weights()
    # kernel, bias (Dense) + scale, bias (BN) + mean, var (BN statistics)
    assert model.count_params() == 3 * 4 + 4 + 4 * 4 == sum(w.size for w in weights)
    model.set_weights([np.full_like(w, 0.5) for w in weights])
    assert all((w == 0.5).all() for w in model.get_weights())
    with pytest.raises(ShapeError, match="needs 6"):
        model.set_weights(weights[:2])
    with pytest.raises(ShapeError, match="shape"):
        model.set_weights([np.zeros((1,))] * len(weights))
    model.compile(optimizer="adam", loss="mse")  # compiling keeps the weights
    assert all((w == 0.5).all() for w in model.get_weights())


def test_weights_come_in_keras_order():
    """Keras lists weights layer by layer: kernel, bias; gamma, beta, moving mean and variance;
    kernel, recurrent kernel, bias. A JAX tree would sort them (bias first, layers_10 before
    layers_2, statistics last), and ``W, b = model.get_weights()`` would swap silently."""
    stack = [layers.Conv2D(8, 3, input_shape=(8, 8, 1)), layers.BatchNormalization()]
    stack += [layers.Flatten(), layers.Dense(10)]
    stack += [layers.Dense(i + 1) for i in range(9)]  # layers_4 .. layers_12
    model = Sequential(stack)
    shapes = [w.shape for w in model.get_weights()]
    assert shapes[:8] == [(3, 3, 1, 8), (8,), (8,), (8,), (8,), (8,), (288, 10), (10,)]
    dense_kernels = [s for s in shapes[8:] if len(s) == 2]
    assert dense_kernels == [(10, 1), *[(i, i + 1) for i in range(1, 9)]]
    bn = model.state.variables if model.state is not None else model._keras.variables
    gamma, beta, mean, var = model.get_weights()[2:6]
    np.testing.assert_array_equal(gamma, bn["params"]["layers_1"]["scale"])
    np.testing.assert_array_equal(mean, bn["batch_stats"]["layers_1"]["mean"])
    np.testing.assert_array_equal(var, bn["batch_stats"]["layers_1"]["var"])
    assert (beta == 0).all() and (var == 1).all()  # the initial values tell them apart
    # set_weights takes the same order: a Keras-style [kernel, bias] list lands where it should
    lstm = Sequential([layers.LSTM(2, input_shape=(3, 4))])
    kernel, recurrent, bias = lstm.get_weights()
    assert (kernel.shape, recurrent.shape, bias.shape) == ((4, 8), (2, 8), (8,))
    attention = Sequential([layers.MultiHeadAttention(2, 4, input_shape=(6, 8))])
    kernels = [w.shape for w in attention.get_weights() if w.ndim == 3]
    assert kernels == [(8, 2, 4)] * 3 + [(2, 4, 8)]  # query, key, value, attention_output
    names = [p[-2] for p in weight_order.keras_paths(attention._keras.variables)]
    assert names == ["query"] * 2 + ["key"] * 2 + ["value"] * 2 + ["attention_output"] * 2
    dense = Sequential([layers.Dense(2, input_shape=(3,))])
    w, b = np.arange(6, dtype=np.float32).reshape(3, 2), np.array([1.0, -1.0], np.float32)
    dense.set_weights([w, b])
    np.testing.assert_allclose(dense.predict(np.eye(3, dtype=np.float32), verbose=0), w + b)


def test_iterable_of_batches_is_padded_and_masked(data):
    x, y = data
    arrays_model = Model(nn.Dense(3))
    arrays_model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", learning_rate=0.1)
    arrays_model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 100, 32)]  # last batch: 4 rows
    iter_model = Model(nn.Dense(3))
    iter_model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", learning_rate=0.1)
    iter_model.fit(batches, epochs=2, verbose=0)
    for a, b in zip(
        _leaves(arrays_model.state.params), _leaves(iter_model.state.params), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # a generator with steps_per_epoch: only the first 2 batches are read
    gen = ((x[i : i + 32], y[i : i + 32]) for i in range(0, 10_000, 32))
    history = iter_model.fit(gen, steps_per_epoch=2, epochs=1, verbose=0)
    assert history.params["steps"] == 2
    assert iter_model.predict(iter(batches)).shape == (100, 3)
    assert iter_model.evaluate(batches, verbose=0) == pytest.approx(
        iter_model.evaluate(x, y, verbose=0), rel=1e-6
    )


def test_dict_input_validation_split_and_class_weight(data):
    x, y = data
    model = Model(nn.Dense(3))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit({"x": x, "y": y}, epochs=2, validation_split=0.2, verbose=0)
    assert history.params["steps"] == 3  # 80 training rows, batches of 32
    val = model.evaluate(x[80:], y[80:], verbose=0, return_dict=True)
    assert history.history["val_loss"][-1] == pytest.approx(val["loss"], rel=1e-6)
    # class weights are sample weights by class
    w = {0: 1.0, 1: 3.0, 2: 0.5}
    a, b = Model(nn.Dense(3)), Model(nn.Dense(3))
    for m in (a, b):
        m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", learning_rate=0.1)
    a.fit(x, y, class_weight=w, epochs=1, verbose=0)
    b.fit(x, y, sample_weight=np.array([w[c] for c in y], np.float32), epochs=1, verbose=0)
    for p, q in zip(_leaves(a.state.params), _leaves(b.state.params), strict=True):
        np.testing.assert_array_equal(p, q)
    with pytest.raises(DataError, match="class_weight"):
        a.fit(x, y, class_weight={0: 1.0}, verbose=0)
    # As in Keras, class weights weigh the training rows only, not the validation_split rows.
    history = a.fit(x, y, class_weight=w, validation_split=0.2, epochs=1, verbose=0)
    val = a.evaluate(x[80:], y[80:], verbose=0, return_dict=True)
    assert history.history["val_loss"][-1] == pytest.approx(val["loss"], rel=1e-6)


def test_compile_options(data):
    x, y = data
    model = Model(nn.Dense(3))
    model.compile(
        optimizer={"name": "adam", "learning_rate": 0.05}, loss="sparse_categorical_crossentropy"
    )
    model.fit(x[:4], y[:4], verbose=0)
    assert model.optimizer.learning_rate == pytest.approx(0.05)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert model.optimizer.learning_rate == pytest.approx(0.01)  # Keras's SGD default
    model.optimizer.learning_rate = 0.2
    assert model.optimizer.lr == pytest.approx(0.2)
    # an optax transformation, eager mode and loss weights
    model.compile(
        optimizer=optax.sgd(0.1), loss="sparse_categorical_crossentropy", run_eagerly=True
    )
    model.fit(x, y, epochs=1, verbose=0)
    ref = model.evaluate(x, y, verbose=0)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", loss_weights=[2.0])
    assert model.evaluate(x, y, verbose=0) == pytest.approx(2 * ref, rel=1e-6)
    with pytest.raises(ConfigError, match="loss"):
        model.compile(optimizer="sgd")
    with pytest.raises(ConfigError, match="optax"):
        model.compile(optimizer=optax.sgd(0.1), loss="mse", learning_rate=0.1)
    with pytest.raises(ConfigError, match="compile"):
        Model(nn.Dense(3)).fit(x, y)


def test_build_and_lazy_build(data):
    x, _ = data
    model = Model(nn.Dense(3))
    assert not model.built
    with pytest.raises(ConfigError, match="build"):
        model.count_params()
    model.build((None, 5))
    assert model.built and model.count_params() == 5 * 3 + 3
    assert model.predict(x[:2]).shape == (2, 3)  # predicting needs no compile
    with pytest.raises(ConfigError, match="Linen"):
        Model(lambda x: x)


def test_history_is_a_callback_with_keras_attributes(data):
    x, y = data
    model = Model(nn.Dense(3))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=2, validation_data=(x[:10], y[:10]), verbose=0)
    assert isinstance(history, History)
    assert {"loss", "val_loss"} <= set(history.history)
    assert all(len(v) == 2 for v in history.history.values())
    # initial_epoch continues the count as in Keras
    history = model.fit(x, y, epochs=4, initial_epoch=2, verbose=0)
    assert history.epoch == [2, 3]
    assert np.isfinite(np.asarray(jnp.stack(jax.tree.leaves(model.state.params)[:1]))).all()


def test_evaluate_and_predict_run_their_callback_hooks(data):
    from jaxnets.callbacks import LambdaCallback

    x, y = data
    calls = []
    cb = LambdaCallback(
        on_test_begin=lambda logs: calls.append("test_begin"),
        on_test_end=lambda logs: calls.append(("test_end", sorted(logs))),
        on_predict_begin=lambda logs: calls.append("predict_begin"),
        on_predict_end=lambda logs: calls.append("predict_end"),
    )
    model = Model(nn.Dense(3))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.evaluate(x, y, callbacks=[cb], verbose=0)
    assert model.predict(x[:4], callbacks=[cb]).shape == (4, 3)
    assert calls == ["test_begin", ("test_end", ["loss"]), "predict_begin", "predict_end"]


def test_each_fit_call_shuffles_anew_and_reruns_repeat():
    """Keras reshuffles on every fit call: a loop of fit(epochs=1) must not replay one order.
    The same calls on a fresh model with the same seed give the same orders again."""

    def orders():
        seen = []

        def record(x):
            jax.debug.callback(
                lambda rows: seen.append(tuple(np.asarray(rows)[:, 0].astype(int))), x
            )
            return x

        x = np.arange(8, dtype=np.float32)[:, None]
        model = Sequential([record, layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        calls = []
        for _ in range(3):
            seen.clear()
            model.fit(x, x, batch_size=4, epochs=1, verbose=0)
            calls.append(tuple(seen))
        return calls

    first = orders()
    assert len(set(first)) == 3, first  # three calls, three orders
    assert orders() == first


def test_binary_precision_and_recall_are_the_positive_class_as_in_keras():
    from sklearn.metrics import f1_score, precision_score, recall_score

    x = np.array([[2.0], [1.0], [-1.0], [-2.0], [3.0], [-3.0], [0.5]], np.float32)
    y = np.array([1, 0, 0, 0, 1, 0, 0], np.int32)
    model = Sequential([layers.Dense(1, activation="sigmoid", input_shape=(1,))])
    model.compile(
        optimizer="adam", loss="binary_crossentropy", metrics=["precision", "recall", "f1"]
    )
    model.set_weights([np.ones((1, 1), np.float32), np.zeros(1, np.float32)])
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    pred = (model.predict(x, verbose=0)[:, 0] > 0.5).astype(int)
    assert logs["precision"] == pytest.approx(precision_score(y, pred))  # 2/3, not the macro 0.8
    assert logs["recall"] == pytest.approx(recall_score(y, pred))
    assert logs["f1"] == pytest.approx(f1_score(y, pred))


def test_custom_losses_are_called_the_keras_way():
    """compile(loss=fn) calls fn(y_true, y_pred) as Keras does: an asymmetric loss (pinball at
    the 0.9 quantile) must fit the 0.9 quantile, not the 0.1 one; a loss returning the batch
    mean trains too, row by row, so the padded rows of the last batch are left out."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 1)).astype(np.float32)
    y = (x[:, 0] + rng.normal(size=256)).astype(np.float32)  # unit noise around x

    def pinball(y_true, y_pred):
        e = y_true - y_pred
        return jnp.mean(jnp.maximum(0.9 * e, -0.1 * e), axis=-1)

    model = Sequential([layers.Dense(1, input_shape=(1,), kernel_initializer="zeros")])
    model.compile(optimizer="adam", learning_rate=0.05, loss=pinball)
    model.fit(x, y, epochs=150, batch_size=64, verbose=0)
    below = float((y < model.predict(x, verbose=0)[:, 0]).mean())
    assert 0.85 < below < 0.95  # the reversed call order gives ~0.1

    def mse_mean(y_true, y_pred):
        return jnp.mean(jnp.square(y_true - y_pred))

    a = Sequential([layers.Dense(1, input_shape=(1,))])
    b = Sequential([layers.Dense(1, input_shape=(1,))])
    a.compile(optimizer="sgd", learning_rate=0.1, loss=mse_mean)
    b.compile(optimizer="sgd", learning_rate=0.1, loss="mse")
    for m in (a, b):
        m.fit(
            x[:100], y[:100], epochs=2, batch_size=32, verbose=0, shuffle=False
        )  # 100 = 3 x 32 + 4
    for p, q in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6)


def test_binary_crossentropy_after_a_softmax_reads_probabilities():
    """A named loss reads probabilities in Keras; a softmax it cannot absorb stays in the model."""
    x = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[(x[:, 0] > 0).astype(int)]
    model = Sequential([layers.Dense(2, activation="softmax", input_shape=(3,))])
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    p = np.clip(model.predict(x, verbose=0), 1e-7, 1 - 1e-7)
    expected = float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))
    assert model.evaluate(x, y, verbose=0) == pytest.approx(expected, rel=1e-5)


def test_a_users_batch_callback_runs_after_every_batch_as_in_keras():
    from jaxnets.callbacks import Callback, LambdaCallback

    class StopAfter3(Callback):
        def __init__(self):
            super().__init__()
            self.batches = []

        def on_train_batch_end(self, batch, logs=None):
            self.batches.append((batch, sorted(logs)))
            if batch >= 2:
                self.model.stop_training = True

    x = np.random.default_rng(0).random((320, 3)).astype(np.float32)
    model = Sequential([layers.Dense(1, input_shape=(3,))])
    model.compile(optimizer="sgd", loss="mse")
    stop = StopAfter3()
    history = model.fit(x, x.sum(1), batch_size=32, epochs=3, verbose=0, callbacks=[stop])
    assert [b for b, _ in stop.batches] == [0, 1, 2] and stop.batches[0][1] == ["loss"]
    assert int(model.state.step) == 3 and len(history.epoch) == 1
    seen = []
    model.fit(
        x,
        x.sum(1),
        batch_size=32,
        epochs=1,
        verbose=0,
        callbacks=[LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(b))],
    )
    assert seen == list(range(10))
    with pytest.raises(ConfigError, match="validation_freq"):
        model.fit(x, x.sum(1), validation_freq=2, verbose=0)
