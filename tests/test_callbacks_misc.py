"""History, TerminateOnNaN and LambdaCallback."""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets.callbacks import History, LambdaCallback, TerminateOnNaN
from jaxnets.errors import ConfigError
from jaxnets.keras import Model
from jaxnets.training import create_train_state, fit


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32)


class Fragile(nn.Module):
    """Outputs sqrt(s): with mse against 0 the loss is s, and one SGD step at lr 2 makes s = -1."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        s = self.param("s", nn.initializers.ones, (1,))
        return jnp.sqrt(s) * jnp.ones((x.shape[0], 1))


def test_terminate_on_nan_stops_and_keeps_the_last_good_params(xy, capsys):
    x, _ = xy
    y = np.zeros((len(x), 1), np.float32)
    model = Model(Fragile())
    model.compile(optimizer="sgd", loss="mse", learning_rate=2.0)
    history = model.fit(x, y, epochs=5, batch_size=8, callbacks=[TerminateOnNaN()], verbose=0)
    assert history.epoch == [0] and np.isnan(history.history["loss"][0])
    # said once, at the first logged batch (log_every=50: the epoch's last, index 7)
    assert capsys.readouterr().out == "Batch 7: invalid loss, terminating training\n"
    # step 1 was applied (s = 1 - 2 * 1); steps 2..8 had a NaN loss and changed nothing
    np.testing.assert_array_equal(np.asarray(model.state.params["s"]), [-1.0])
    assert int(model.state.skipped) == 7 and int(model.state.step) == 8


def test_terminate_on_nan_in_the_functional_fit(xy):
    x, _ = xy
    y = np.zeros((len(x), 1), np.float32)
    state = create_train_state(Fragile(), "sgd", x[:1], loss="mse", metrics=(), learning_rate=2.0)
    state, history = fit(state, (x, y), epochs=5, batch_size=8, verbose=0,
                         callbacks=[TerminateOnNaN()])  # fmt: skip
    assert len(history["loss"]) == 1


def test_history_state_and_params():
    h = History()
    h.on_train_begin()
    h.on_epoch_end(0, {"loss": 1.0, "cm": np.eye(2)})
    state = h.get_state()
    assert state == {"epoch": [0], "history": {"loss": [1.0], "cm": [[[1.0, 0.0], [0.0, 1.0]]]}}
    other = History()
    other.set_state(state)
    assert other.epoch == [0] and other.history["loss"] == [1.0]


def test_lambda_callback_hooks(xy):
    x, y = xy
    calls = []
    cb = LambdaCallback(
        on_train_begin=lambda logs: calls.append("begin"),
        on_epoch_begin=lambda epoch, logs: calls.append(f"e{epoch}"),
        on_batch_end=lambda batch, logs: calls.append(f"b{batch}"),
        on_train_end=lambda logs: calls.append("end"),
    )
    model = Model(nn.Dense(2))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=16, log_every=2, callbacks=[cb], verbose=0)
    # batch hooks run where the loop logs: after step 2 (index 1) and after the epoch's
    # last step (index 3), as Keras calls them for every batch
    assert calls == ["begin", "e0", "b1", "b3", "e1", "b1", "b3", "end"]
    with pytest.raises(ConfigError, match="no hook"):
        LambdaCallback(on_epoch_finish=print)
    with pytest.raises(ConfigError, match="callable"):
        LambdaCallback(on_epoch_end=3)


def test_last_batch_hook_gets_the_epochs_train_logs(xy):
    x, y = xy
    seen = {}
    cb = LambdaCallback(on_batch_end=lambda batch, logs: seen.setdefault(batch, []).append(logs))
    model = Model(nn.Dense(2))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=2, batch_size=16, log_every=2, callbacks=[cb], verbose=0)
    last = seen[len(x) // 16 - 1]
    assert [logs["loss"] for logs in last] == history.history["loss"]
    assert [logs["accuracy"] for logs in last] == history.history["accuracy"]
    assert all("skipped" not in logs for logs in last)  # batch logs hold metrics only


def test_every_hook_gets_a_logs_dict_as_in_keras():
    """The Keras guide's callbacks call ``logs.keys()`` in every hook; Keras never passes None,
    and on_train_end gets the last epoch's logs."""
    import jaxnets
    from jaxnets import layers
    from jaxnets.callbacks import Callback

    seen = {}

    class Keys(Callback):
        pass

    for name in [n for n in dir(Callback) if n.startswith("on_")]:

        def hook(self, *args, _name=name):
            seen.setdefault(_name, list(args[-1].keys()))  # raises on None

        setattr(Keys, name, hook)
    x, y = np.ones((8, 3), np.float32), np.ones((8, 1), np.float32)
    model = jaxnets.Sequential([layers.Dense(1, input_shape=(3,))])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[Keys()], validation_split=0.25)
    model.evaluate(x, y, verbose=0, callbacks=[Keys()])
    model.predict(x, verbose=0, callbacks=[Keys()])
    assert {"loss", "val_loss"} <= set(seen["on_train_end"])
    assert seen["on_train_begin"] == [] and seen["on_epoch_begin"] == []
    assert {"on_test_begin", "on_test_end", "on_predict_begin", "on_predict_end"} <= set(seen)


def test_state_changes_in_on_train_batch_begin_reach_the_step():
    import jaxnets
    from jaxnets import layers
    from jaxnets.callbacks import Callback

    class Freeze(Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.model.optimizer.learning_rate = 0.0

    x = np.random.default_rng(0).random((64, 3)).astype(np.float32)
    model = jaxnets.Sequential([layers.Dense(1, input_shape=(3,))])
    model.compile(optimizer="sgd", loss="mse", learning_rate=0.1)
    before = model.get_weights()
    model.fit(x, x.sum(1), batch_size=16, epochs=1, verbose=0, callbacks=[Freeze()])
    assert model.optimizer.learning_rate == 0.0
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # learning rate 0 from the first step on
