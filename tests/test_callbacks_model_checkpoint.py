"""ModelCheckpoint: when it saves (Keras's rules) and that the saves load."""

import flax.linen as nn
import numpy as np
import pytest

import jaxnets
from jaxnets import layers
from jaxnets.callbacks import LambdaCallback, ModelCheckpoint
from jaxnets.errors import ConfigError
from jaxnets.keras import Model, Sequential
from jaxnets.training import create_train_state, fit


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32)


def _fake(values):
    return LambdaCallback(on_epoch_end=lambda e, logs: logs.update(fake=values[e]))


def test_save_best_only_keeps_the_best_epoch(tmp_path, xy):
    x, y = xy
    values = [1.0, 0.5, 0.7, 0.4, 0.9]
    model = Sequential([layers.Dense(2, activation="softmax", input_shape=(3,))])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", learning_rate=0.5)
    saved = []
    path = str(tmp_path / "ckpt-{epoch:02d}")
    cb = ModelCheckpoint(path, monitor="fake", mode="min", save_best_only=True)
    snap = LambdaCallback(on_epoch_end=lambda e, logs: saved.append(model.predict(x)))
    model.fit(x, y, epochs=5, callbacks=[_fake(values), cb, snap], verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-01", "ckpt-02", "ckpt-04"]
    assert cb.best == 0.4 and cb.get_state() == {"best": 0.4}
    best = jaxnets.load_model(tmp_path / "ckpt-04")
    np.testing.assert_allclose(best.predict(x), saved[3], rtol=1e-6)


def test_threshold_weights_only_and_overwrite(tmp_path, xy):
    x, y = xy
    model = Model(nn.Dense(2))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", learning_rate=0.5)
    cb = ModelCheckpoint(tmp_path / "w", monitor="fake", mode="max", save_best_only=True,
                         save_weights_only=True, initial_value_threshold=0.6)  # fmt: skip
    model.fit(x, y, epochs=4, callbacks=[_fake([0.5, 0.7, 0.65, 0.8]), cb], verbose=0)
    assert cb.best == 0.8  # saved at epochs 1 and 3, the same directory overwritten
    fresh = Model(nn.Dense(2))
    fresh.build((None, 3))
    fresh.load_weights(tmp_path / "w")
    np.testing.assert_array_equal(fresh.predict(x), model.predict(x))


def test_every_epoch_and_functional_fit(tmp_path, xy):
    x, y = xy
    state = create_train_state(nn.Dense(2), "sgd", x[:1], learning_rate=0.1)
    fit(state, (x, y), epochs=2, verbose=0,
        callbacks=[ModelCheckpoint(str(tmp_path / "s{epoch}-{loss:.3f}"))])  # fmt: skip
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[0].startswith("s1-") and names[1].startswith("s2-")
    assert {p.name for p in (tmp_path / names[0]).iterdir()} == {
        "weights.json", "variables", "train_state",
    }  # fmt: skip


def test_bad_arguments():
    with pytest.raises(ConfigError, match="save_freq"):
        ModelCheckpoint("x", save_freq="sometimes")
    with pytest.raises(ConfigError, match="mode"):
        ModelCheckpoint("x", monitor="confusion_matrix", save_best_only=True)


@pytest.mark.parametrize(
    "log_every, expected",
    [
        # every step logged: saves after global steps 3 and 6 (epoch 2's second step)
        (1, ["e1-b3", "e2-b2"]),
        # logged after steps 2 and 4 of each epoch: 4 >= 3 steps at each epoch's end
        (2, ["e1-b4", "e2-b4"]),
    ],
)
def test_save_freq_counts_every_step_across_epochs(tmp_path, xy, log_every, expected):
    x, y = xy  # 32 rows, batch 8: 4 steps an epoch
    model = Sequential([layers.Dense(2, activation="softmax", input_shape=(3,))])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    cb = ModelCheckpoint(str(tmp_path / "e{epoch}-b{batch}"), save_freq=3)
    model.fit(x, y, epochs=2, batch_size=8, log_every=log_every, callbacks=[cb], verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == expected
