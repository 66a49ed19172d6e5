"""ReduceLROnPlateau (table-driven against Keras 3's rules) and LearningRateScheduler.

Expected learning rates are derived by hand from the rules quoted in
jaxnets.callbacks.lr: in cooldown an epoch decrements the counter and
resets wait; an improvement (beyond min_delta) resets wait; otherwise, out
of cooldown, wait += 1 and at wait >= patience lr = max(lr * factor, min_lr)
while lr > min_lr, starting a cooldown.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets import compile as compile_lib
from jaxnets import optim
from jaxnets.callbacks import LambdaCallback, LearningRateScheduler, ReduceLROnPlateau
from jaxnets.errors import ConfigError
from jaxnets.keras import Model
from jaxnets.training import create_train_state
from jaxnets.training.loop import FitContext

# (kwargs, monitored values, learning rate in effect after each epoch), lr starts at 1.0
CASES = [
    ({"patience": 2, "min_delta": 0.0}, [1, 1, 1, 1, 1, 1], [1, 1, 0.5, 0.5, 0.25, 0.25]),
    # cooldown=1 expires in the same epoch it is checked: no delay at all (Keras's rule).
    ({"patience": 1, "cooldown": 1}, [1, 1, 1, 1], [1, 0.5, 0.25, 0.125]),
    ({"patience": 1, "cooldown": 2}, [1] * 6, [1, 0.5, 0.5, 0.25, 0.25, 0.125]),
    # min_lr floors the rate, after which nothing changes.
    ({"patience": 1, "factor": 0.1, "min_lr": 0.05}, [1, 1, 1, 1], [1, 0.1, 0.05, 0.05]),
    # 'acc' in the name: maximise; 0.505 is not 0.01 better than 0.5.
    (
        {"patience": 1, "monitor": "val_accuracy", "min_delta": 0.01},
        [0.5, 0.505, 0.6, 0.6],
        [1, 0.5, 0.5, 0.25],
    ),
    ({"patience": 1, "mode": "max", "min_delta": 0.0}, [1, 2, 3, 2], [1, 1, 1, 0.5]),
    # the default min_delta 1e-4 in mode min.
    ({"patience": 1}, [1.0, 0.99995, 0.9, 0.89999], [1, 0.5, 0.5, 0.25]),
    # improvements reset wait.
    ({"patience": 2, "min_delta": 0.0}, [3, 2, 2.5, 1, 1.5, 1.2], [1, 1, 1, 1, 1, 0.5]),
]


def _ctx(lr=1.0):
    state = create_train_state(nn.Dense(2), "adam", jnp.zeros((1, 3)), learning_rate=lr)
    return FitContext(state)


@pytest.mark.parametrize("kwargs, values, expected", CASES)
def test_reduce_lr_matches_keras_rules(kwargs, values, expected):
    kwargs = {"monitor": "val_loss", "factor": 0.5, **kwargs}
    ctx = _ctx()
    cb = ReduceLROnPlateau(**kwargs)
    cb.set_model(ctx)
    cb.on_train_begin()
    seen, logged = [], []
    for epoch, v in enumerate(values):
        logs = {kwargs["monitor"]: v}
        cb.on_epoch_end(epoch, logs)
        logged.append(logs["learning_rate"])
        seen.append(float(optim.get_hyperparam(ctx.state.opt_state)))
    np.testing.assert_allclose(seen, expected, rtol=1e-6)
    # Keras logs the rate that was in effect during the epoch.
    np.testing.assert_allclose(logged, [1.0, *expected[:-1]], rtol=1e-6)


def test_reduce_lr_state_and_validation():
    with pytest.raises(ConfigError, match="factor"):
        ReduceLROnPlateau(factor=1.0)
    cb = ReduceLROnPlateau(monitor="loss", patience=3)
    cb.set_model(_ctx())
    for epoch, v in enumerate([1.0, 2.0]):
        cb.on_epoch_end(epoch, {"loss": v})
    assert cb.get_state() == {"best": 1.0, "wait": 1, "cooldown_counter": 0}
    clone = ReduceLROnPlateau(monitor="loss", patience=3)
    clone.set_state(cb.get_state())
    assert clone.get_state() == cb.get_state()


TRACES = []


class CountingDense(nn.Module):
    """nn.Dense that counts how often it is traced in train mode (Python runs only when tracing)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        if train:
            TRACES.append(1)
        return nn.Dense(3)(x)


def test_fit_with_reduce_lr_traces_the_step_once():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    model = Model(CountingDense())
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", learning_rate=0.1)
    TRACES.clear()
    per_epoch = []
    # monitor a quantity that never improves after epoch 0: the rate changes every epoch.
    flat = LambdaCallback(on_epoch_end=lambda e, logs: logs.update(flat=1.0))
    record = LambdaCallback(
        on_epoch_end=lambda e, logs: per_epoch.append(
            (len(TRACES), compile_lib.STATS["compiles"], logs)
        )
    )
    cb = ReduceLROnPlateau(monitor="flat", mode="min", patience=1, factor=0.5)
    model.fit(x, y, epochs=5, batch_size=16, verbose=0, callbacks=[flat, cb, record])
    rates = [logs["learning_rate"] for _, _, logs in per_epoch]
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.05, 0.025, 0.0125], rtol=1e-6)
    traces = [n for n, _, _ in per_epoch]
    assert traces[0] >= 1 and traces == [traces[0]] * 5  # nothing retraced after epoch 0
    compiles = [c for _, c, _ in per_epoch]
    assert compiles == [compiles[0]] * 5  # and nothing recompiled
    # the new rate is really used: a step at lr 0 leaves the parameters unchanged.
    model.optimizer.learning_rate = 0.0
    before = jax.tree.map(np.asarray, model.state.params)
    model.train_on_batch(x[:16], y[:16])
    jax.tree.map(
        np.testing.assert_array_equal, before, jax.tree.map(np.asarray, model.state.params)
    )


def test_learning_rate_scheduler_in_fit():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    model = Model(nn.Dense(3))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", learning_rate=1.0)
    two_args = LearningRateScheduler(lambda epoch, lr: lr * 0.5)
    history = model.fit(x, y, epochs=3, verbose=0, callbacks=[two_args])
    np.testing.assert_allclose(history.history["learning_rate"], [0.5, 0.25, 0.125])
    one_arg = LearningRateScheduler(lambda epoch: 0.01 * (epoch + 1))
    history = model.fit(x, y, epochs=2, verbose=0, callbacks=[one_arg])
    np.testing.assert_allclose(history.history["learning_rate"], [0.01, 0.02], rtol=1e-6)
    assert model.optimizer.learning_rate == pytest.approx(0.02)


def test_scheduler_needs_a_number():
    ctx = _ctx()
    cb = LearningRateScheduler(lambda epoch, lr: "fast")
    cb.set_model(ctx)
    with pytest.raises(ConfigError, match="number"):
        cb.on_epoch_begin(0)


def test_learning_rate_keeps_dtype():
    ctx = _ctx()
    cb = LearningRateScheduler(lambda epoch, lr: 0.3)
    cb.set_model(ctx)
    before = jax.tree.structure(ctx.state)
    cb.on_epoch_begin(0)
    assert jax.tree.structure(ctx.state) == before
    assert optim.get_hyperparam(ctx.state.opt_state).dtype == jnp.float32


def test_logged_learning_rate_is_the_scheduled_rate_not_the_peak():
    import jaxnets
    from jaxnets import layers
    from jaxnets.callbacks import ReduceLROnPlateau

    x = np.random.default_rng(0).random((32, 3)).astype(np.float32)
    model = jaxnets.Sequential([layers.Dense(1, input_shape=(3,))])
    model.compile(optimizer="sgd", loss="mse", learning_rate=0.1, schedule="cosine", total_steps=8)
    history = model.fit(
        x,
        x.sum(1),
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[ReduceLROnPlateau(monitor="loss", patience=100)],
    )
    # cosine over 8 steps from 0.1: the rate of step 3 (0-based), then of step 7
    expected = [0.05 * (1 + np.cos(np.pi * s / 8)) for s in (3, 7)]
    np.testing.assert_allclose(history.history["learning_rate"], expected, rtol=1e-5)
    assert model.optimizer.learning_rate == pytest.approx(
        0.1
    )  # the peak, which set_hyperparam sets
