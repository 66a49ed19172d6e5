"""Keras weight regularizers (`kernel_regularizer=` and friends) against closed forms.

Keras 3 adds each regularized weight's penalty to the loss once per step:
``loss = mean data loss + sum of penalties`` (train and evaluate logs alike).
The oracle here is that formula with numpy, and plain `jax.grad` of it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets import layers, regularizers
from jaxnets.errors import ConfigError
from jaxnets.keras import Sequential, load_model
from jaxnets.training import create_train_state, train_step


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32)


def _model(**dense):
    return Sequential(
        [layers.Dense(3, activation="relu", input_shape=(4,), **dense), layers.Dense(2)]
    )


def _penalty(params):
    k0 = np.asarray(params["layers_0"]["kernel"], np.float64)
    b0 = np.asarray(params["layers_0"]["bias"], np.float64)
    return 0.01 * np.square(k0).sum() + 0.5 * np.abs(b0).sum()


def test_evaluate_loss_adds_each_penalty_once():
    x, y = _data()
    reg = dict(kernel_regularizer=regularizers.L2(0.01), bias_regularizer=regularizers.L1(0.5))
    plain, regularized = _model(), _model(**reg)
    for m in (plain, regularized):
        m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=[])
        m.build((None, 4))
    regularized.set_weights([w + 0.1 for w in plain.get_weights()])
    plain.set_weights(regularized.get_weights())
    base = plain.evaluate(x, y, batch_size=4, verbose=0)  # padded last batch: 10 = 4 + 4 + 2
    got = regularized.evaluate(x, y, batch_size=4, verbose=0)
    np.testing.assert_allclose(got - base, _penalty(regularized.state.params), rtol=1e-5)


def test_the_gradient_is_the_penalised_losses():
    x, y = _data()
    module = _model(kernel_regularizer="l2", bias_regularizer=regularizers.L1(0.5)).module
    state = create_train_state(module, "sgd", x[:1], learning_rate=1.0, metrics=())
    batch = {"x": x, "y": y, "mask": np.ones(len(x), np.float32)}
    new, sums = jax.jit(train_step)(state, batch)

    def objective(params):  # the data loss by hand, plus the penalty
        logits = module.apply({"params": params}, x)
        data = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])
        k0, b0 = params["layers_0"]["kernel"], params["layers_0"]["bias"]
        return data + 0.01 * jnp.sum(k0**2) + 0.5 * jnp.sum(jnp.abs(b0))

    loss, grads = jax.value_and_grad(objective)(state.params)
    np.testing.assert_allclose(sums["loss"]["total"] / len(x), loss, rtol=1e-5)
    want = jax.tree.map(lambda p, g: p - g, state.params, grads)
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "layer, names",
    [
        (layers.Conv1D(2, 3, kernel_regularizer="l1", bias_regularizer="l2"), ("kernel", "bias")),
        (layers.LSTM(3, kernel_regularizer="l2", recurrent_regularizer="l1"), ("kernel", "recurrent")),
        (layers.GRU(3, bias_regularizer="l1_l2"), ("bias",)),
        (layers.SeparableConv2D(2, 3, depthwise_regularizer="l2", pointwise_regularizer="l1"),
         ("depthwise", "pointwise")),
    ],
)  # fmt: skip
def test_each_layer_sows_its_weights_penalties(layer, names):
    x = jnp.ones((2, 6, 6, 2)) if isinstance(layer, layers.SeparableConv2D) else jnp.ones((2, 5, 3))
    variables = layer.init(jax.random.key(0), x)
    params = variables["params"]
    _, sown = layer.apply({"params": params}, x, mutable=["losses"])
    assert sorted(sown["losses"]) == sorted(f"{n}_regularizer" for n in names)
    weight = {"kernel": "kernel", "recurrent": "recurrent_kernel", "bias": "bias",
              "depthwise": "depthwise_kernel", "pointwise": "pointwise_kernel"}  # fmt: skip
    for n in names:
        reg = regularizers.get(getattr(layer, f"{n}_regularizer"))
        np.testing.assert_allclose(sown["losses"][f"{n}_regularizer"], reg(params[weight[n]]))


def test_penalties_stay_out_of_the_model_state():
    x, _ = _data()
    state = create_train_state(_model(kernel_regularizer="l2").module, "sgd", x[:1])
    assert "losses" not in state.model_state


def test_bad_regularizers_are_refused_at_construction():
    with pytest.raises(ConfigError, match="unknown regularizer 'l3'"):
        layers.Dense(2, kernel_regularizer="l3")
    with pytest.raises(ConfigError, match="l2 must be a number >= 0"):
        regularizers.L2(-1.0)


def test_save_and_load_keep_the_regularizers(tmp_path):
    x, y = _data()
    m = _model(kernel_regularizer=regularizers.L2(0.03), bias_regularizer="l1")
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=[])
    m.fit(x, y, epochs=1, batch_size=5, verbose=0)
    m.save(tmp_path / "m.keras")
    back = load_model(tmp_path / "m.keras")
    assert back.layers[0].kernel_regularizer == regularizers.L2(0.03)
    assert back.layers[0].bias_regularizer == "l1"
    np.testing.assert_allclose(
        back.evaluate(x, y, verbose=0), m.evaluate(x, y, verbose=0), rtol=1e-6
    )
