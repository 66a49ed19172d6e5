"""save / load_model round trips, and what the loader refuses."""

import json
import os

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

import jaxnets
from jaxnets import layers, models
from jaxnets.errors import ConfigError, FormatError
from jaxnets.keras import Model, Sequential, register_serializable


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 6)).astype(np.float32)
    return x, rng.integers(0, 3, 48)


def _leaves(tree):
    return [np.asarray(a) for a in jax.tree.leaves(tree)]


def _assert_same(a, b):
    for p, q in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_array_equal(p, q)


def test_round_trip_predictions_and_next_step(tmp_path, xy):
    x, y = xy
    model = Sequential([
        layers.Dense(8, activation="relu", input_shape=(6,)),
        layers.BatchNormalization(),
        layers.Dropout(0.3),
        layers.Dense(3, activation="softmax"),
    ])  # fmt: skip
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  learning_rate=3e-3)  # fmt: skip
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    path = tmp_path / "model"
    model.save(path)
    meta = json.loads((path / "model.json").read_text())
    assert meta["module"]["__module__"] == "Sequential"
    assert meta["compile"]["optimizer"] == {"name": "adam", "learning_rate": 3e-3}

    loaded = jaxnets.load_model(path)
    assert isinstance(loaded, Sequential) and loaded == model  # same Linen fields
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    _assert_same(loaded.state.opt_state, model.state.opt_state)
    assert int(loaded.state.step) == int(model.state.step)
    np.testing.assert_array_equal(
        jax.random.key_data(loaded.state.rng), jax.random.key_data(model.state.rng)
    )
    # the next step (with dropout drawn from the restored key) is bitwise the same
    model.train_on_batch(x[:16], y[:16])
    loaded.train_on_batch(x[:16], y[:16])
    _assert_same(loaded.state.params, model.state.params)
    _assert_same(loaded.state.model_state, model.state.model_state)
    assert loaded.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)


def test_zoo_model_and_weights_only(tmp_path, xy):
    x, y = xy
    model = Model(models.get("mlp_784_128_10", num_classes=3))
    model.compile(optimizer=optax.sgd(0.1), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    with pytest.warns(UserWarning, match="compile"):  # an optax object has no JSON form:
        model.save(tmp_path / "zoo")
    # the model loads uncompiled, weights restored
    loaded = jaxnets.load_model(tmp_path / "zoo")
    assert isinstance(loaded, Model) and not loaded.compiled
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))

    model.save_weights(tmp_path / "w")
    fresh = Model(models.get("mlp_784_128_10", num_classes=3), seed=7)
    fresh.build((None, 6))
    fresh.load_weights(tmp_path / "w")
    np.testing.assert_array_equal(fresh.predict(x), model.predict(x))
    with pytest.raises(ConfigError, match="overwrite"):
        model.save_weights(tmp_path / "w", overwrite=False)


def test_unknown_class_is_refused(tmp_path):
    model = Sequential([layers.Dense(2, input_shape=(3,))])
    model.save(tmp_path / "m")
    meta_file = tmp_path / "m" / "model.json"
    meta = json.loads(meta_file.read_text())
    meta["module"]["config"]["layers"][0]["__module__"] = "subprocess.Popen"
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(FormatError, match="unknown layer class 'subprocess.Popen'"):
        jaxnets.load_model(tmp_path / "m")
    meta["module"]["config"]["layers"][0] = {
        "__module__": "Dense",
        "config": {"units": 2, "evil": 1},
    }
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(FormatError, match="no field"):
        jaxnets.load_model(tmp_path / "m")
    meta_file.write_text("{not json")
    with pytest.raises(FormatError, match="cannot read"):
        jaxnets.load_model(tmp_path / "m")
    with pytest.raises(FormatError, match="not a saved jaxnets model"):
        jaxnets.load_model(tmp_path)


def test_unsaveable_fields_and_custom_classes(tmp_path):
    lam = Sequential([layers.Dense(2, activation=lambda v: v * 2, input_shape=(3,))])
    with pytest.raises(FormatError, match="activation"):
        lam.save(tmp_path / "lam")
    assert not os.path.exists(tmp_path / "lam")  # nothing half-written

    class Scale(nn.Module):
        factor: float = 2.0

        @nn.compact
        def __call__(self, x, train: bool = False):
            return self.factor * x

    model = Sequential([layers.Dense(2, input_shape=(3,)), Scale(3.0)])
    with pytest.raises(FormatError, match="register_serializable"):
        model.save(tmp_path / "custom")
    register_serializable(Scale, "test_saving.Scale")
    model.save(tmp_path / "custom")
    loaded = jaxnets.load_model(tmp_path / "custom")
    assert loaded.layers[1] == Scale(3.0)
    # named activations given as functions are stored by name
    fn = Sequential([layers.Dense(2, activation=jax.nn.relu, input_shape=(3,))])
    fn.save(tmp_path / "fn")
    assert jaxnets.load_model(tmp_path / "fn").layers[0].activation == "relu"


def test_refuses_to_overwrite_foreign_directories(tmp_path):
    (tmp_path / "data.txt").write_text("keep me")
    model = Sequential([layers.Dense(2, input_shape=(3,))])
    with pytest.raises(ConfigError, match="not a jaxnets save"):
        model.save(tmp_path)
    assert (tmp_path / "data.txt").read_text() == "keep me"


def test_builtin_loss_and_metric_objects_are_saved_by_name(tmp_path):
    from jaxnets import losses, metrics

    x = np.random.default_rng(0).random((16, 4)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.int32)
    model = jaxnets.Sequential([jaxnets.layers.Dense(2, input_shape=(4,))])
    model.compile(
        optimizer="adam",
        loss=losses.get("sparse_categorical_crossentropy"),
        metrics=[metrics.Accuracy(), "precision"],
    )
    model.fit(x, y, verbose=0)
    model.save(tmp_path / "m")
    loaded = jaxnets.load_model(tmp_path / "m")
    assert loaded.compiled
    assert loaded.evaluate(x, y, verbose=0) == pytest.approx(model.evaluate(x, y, verbose=0))
    # An object without a built-in name cannot be written: save says so.
    model.compile(optimizer="adam", loss=lambda t, p: (t - p[:, 0]) ** 2)
    with pytest.warns(UserWarning, match="compile"):
        model.save(tmp_path / "n")
    assert not jaxnets.load_model(tmp_path / "n").compiled
