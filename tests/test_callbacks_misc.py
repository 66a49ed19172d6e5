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
