"""jaxnets.Model around any Flax module, checked against Keras 3.15 (JAX backend).

Keras is not needed at run time: the behaviours and numbers Keras gave for the
same scripts (with copied weights) are written down where they are used.
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnets.errors import ConfigError, DataError
from jaxnets.keras import Model
from jaxnets.losses import Loss


class TwoHeads(nn.Module):
    """A classification head and a regression head, as a tuple or a dict."""

    as_dict: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.relu(nn.Dense(8)(x))
        cls, reg = nn.Dense(3)(h), nn.Dense(1)(h)
        return {"cls": cls, "reg": reg} if self.as_dict else (cls, reg)


def _data(n=20):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    return x, rng.integers(0, 3, n), rng.normal(size=(n, 1)).astype(np.float32)


def test_a_one_output_loss_dict_compiles_as_in_keras():
    # Keras: compile(loss={"out": "mse"}, loss_weights={"out": 2.0}) on a one-output model
    # trains with 2 * mse; with these weights and data it logged loss 3.4413648, 3.1965232
    # over 2 epochs (SGD 0.01, batch 8, no shuffle, sample weights). jaxnets raised a
    # TypeError ("loss name must be a string, got dict").
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 5)).astype(np.float32)
    y = rng.normal(size=(20, 2)).astype(np.float32)
    sw = rng.uniform(0, 2, 20).astype(np.float32)
    kernel = np.linspace(-1, 1, 10, dtype=np.float32).reshape(5, 2)
    histories = []
    for loss, weights in (({"out": "mse"}, {"out": 2.0}), ("mse", 2.0)):
        model = Model(nn.Dense(2))
        model.compile("sgd", loss=loss, loss_weights=weights)
        model.build((None, 5))
        model.set_weights([kernel, np.zeros(2, np.float32)])
        h = model.fit(x, y, sample_weight=sw, batch_size=8, epochs=2, shuffle=False, verbose=0)
        histories.append(h.history["loss"])
    assert histories[0] == histories[1]


@pytest.mark.parametrize(
    "loss",
    [
        {"cls": "sparse_categorical_crossentropy", "reg": "mse"},
        ["sparse_categorical_crossentropy", "mse"],
    ],
)
def test_per_output_losses_get_a_clear_error(loss):
    # Keras trains each output with its own loss; jaxnets.Model trains one, and said
    # "loss name must be a string" (a TypeError) for the dict.
    model = Model(TwoHeads(as_dict=True))
    with pytest.raises(ConfigError, match="one output with one loss.*per-output losses"):
        model.compile("adam", loss=loss)


@pytest.mark.parametrize("as_dict", [False, True])
def test_several_targets_get_a_clear_error_before_numpy_fails(as_dict):
    # y=[y_cls, y_reg] made numpy raise "inhomogeneous shape"; a dict y "y is a scalar".
    x, y_cls, y_reg = _data()
    model = Model(TwoHeads(as_dict=as_dict))
    model.compile("adam", loss="mse")
    targets = {"cls": y_cls, "reg": y_reg} if as_dict else [y_cls, y_reg]
    for call in (
        lambda: model.fit(x, targets, verbose=0),
        lambda: model.evaluate(x, targets, verbose=0),
        lambda: model.train_on_batch(x, targets),
    ):
        with pytest.raises(DataError, match="one per output.*batch one y array"):
            call()


def test_several_inputs_get_a_clear_error():
    x, y, _ = _data()
    model = Model(nn.Dense(3))
    model.compile("adam", loss="sparse_categorical_crossentropy")
    for call in (
        lambda: model.fit([x, x[:, :2]], y, verbose=0),
        lambda: model.fit({"a": x, "b": x}, y, verbose=0),
        lambda: model.predict({"a": x, "b": x}),
    ):
        with pytest.raises(DataError, match="one per input.*batch one x array"):
            call()


def test_a_one_array_loss_on_several_outputs_fails_before_tracing():
    # evaluate() failed inside the step with AttributeError: 'tuple' object has no attribute 'shape'.
    x, _, y_reg = _data()
    model = Model(TwoHeads())
    model.compile("adam", loss="mse")
    for call in (
        lambda: model.evaluate(x, y_reg, verbose=0),
        lambda: model.fit(x, y_reg, verbose=0),
        lambda: model.test_on_batch(x, y_reg),
    ):
        with pytest.raises(ConfigError, match="several outputs.*loss 'mse'"):
            call()


def _both(outputs, targets):
    cls, reg = outputs
    ce = optax.softmax_cross_entropy_with_integer_labels(cls, targets[:, 0].astype(jnp.int32))
    return ce + 0.5 * (reg[:, 0] - targets[:, 1]) ** 2


def test_a_loss_of_every_output_trains_a_multi_output_model():
    x, y_cls, y_reg = _data()
    targets = np.concatenate([y_cls[:, None].astype(np.float32), y_reg], axis=1)
    model = Model(TwoHeads())
    model.compile("adam", loss=Loss(_both, kind="regression", name="both"), metrics=[])
    model.fit(x, targets, batch_size=8, epochs=1, verbose=0)
    cls, reg = model.predict(x)
    logp = cls - np.log(np.exp(cls).sum(1, keepdims=True))
    expected = np.mean(-logp[np.arange(20), y_cls] + 0.5 * (reg[:, 0] - y_reg[:, 0]) ** 2)
    assert model.evaluate(x, targets, verbose=0) == pytest.approx(expected, rel=1e-5)
    model.compile("adam", loss=Loss(_both, kind="regression", name="both"), metrics=["mae"])
    with pytest.raises(ConfigError, match=r"metrics \['mae'\] read one output array"):
        model.fit(x, targets, verbose=0)


@pytest.mark.parametrize("as_dict", [False, True])
def test_predict_on_batch_returns_every_output_as_numpy(as_dict):
    # A tuple of outputs raised numpy's "inhomogeneous shape"; a dict came back as jax Arrays.
    x, _, _ = _data()
    model = Model(TwoHeads(as_dict=as_dict))
    out, full = model.predict_on_batch(x[:4]), model.predict(x[:4])
    pairs = zip(out.values(), full.values()) if as_dict else zip(out, full)
    for got, want in pairs:
        assert type(got) is np.ndarray
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_a_module_of_several_inputs_is_refused_when_wrapped():
    # Flax raised "TypeError: __call__() missing 1 required positional argument: 'b'"
    # at the first fit or build.
    class TwoInputs(nn.Module):
        @nn.compact
        def __call__(self, a, b, training: bool = False, mask=None):
            return nn.Dense(2)(jnp.concatenate([a, b], -1))

    with pytest.raises(ConfigError, match=r"one input array.*needs 2 \(a, b\)"):
        Model(TwoInputs())


def test_a_one_output_target_dict_and_rows_given_as_a_list_train_as_one_array():
    # Keras takes y={"out": y} for a one-output model; a list of one-hot rows is one array.
    x, y_cls, _ = _data(6)
    one_hot = [np.eye(3, dtype=np.float32)[c] for c in y_cls]
    logs = []
    for y in (
        np.eye(3, dtype=np.float32)[y_cls],
        {"out": np.eye(3, dtype=np.float32)[y_cls]},
        one_hot,
    ):
        model = Model(nn.Dense(3))
        model.compile("sgd", loss="categorical_crossentropy")
        logs.append(model.fit(x, y, batch_size=4, epochs=2, verbose=0).history["loss"])
        logs.append(model.train_on_batch(x, y))
    assert logs[0] == logs[2] == logs[4] and logs[1] == logs[3] == logs[5]


def test_several_targets_in_an_iterable_of_batches_get_the_clear_error():
    x, y_cls, y_reg = _data(8)
    model = Model(TwoHeads())
    model.compile("adam", loss="mse")
    with pytest.raises(DataError, match="y is a list of 2 arrays"):
        model.fit([(x, [y_cls, y_reg])], verbose=0)
