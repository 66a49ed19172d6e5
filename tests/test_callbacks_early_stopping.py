"""EarlyStopping against Keras 3's rules, table-driven, plus one real fit.

Each expected stop epoch below is derived by hand from the rules in
keras/src/callbacks/early_stopping.py (quoted in the module docstring of
jaxnets.callbacks.early_stopping): wait += 1 each monitored epoch; an
improvement (current -/+ min_delta beyond best) resets wait only if the
baseline is beaten too and never stops that epoch; otherwise stop once
wait >= patience and epoch > 0.
"""

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets.callbacks import EarlyStopping, LambdaCallback
from jaxnets.errors import ConfigError
from jaxnets.keras import Model
from jaxnets.training import create_train_state
from jaxnets.training.loop import FitContext

NAN = math.nan

# (kwargs, monitored values per epoch, expected stopped epoch or None)
CASES = [
    # patience 0: the first non-improving epoch stops.
    ({"patience": 0}, [1.0, 0.9, 0.95, 0.8], 2),
    # Keras's docstring example: a flat loss with patience 3 runs 4 epochs.
    ({"patience": 3}, [1.0] * 10, 3),
    ({"patience": 2}, [1.0, 0.9, 0.91, 0.89, 0.95, 0.96, 0.97], 5),
    # min_delta: 0.95 is not 0.1 better than 1.0.
    ({"patience": 1, "min_delta": 0.1}, [1.0, 0.95, 0.85, 0.8], 1),
    # a negative min_delta means the same as its absolute value.
    ({"patience": 1, "min_delta": -0.1}, [1.0, 0.95, 0.85, 0.8], 1),
    # mode max with min_delta: improvements alternate, wait never reaches 2.
    ({"patience": 2, "mode": "max", "min_delta": 0.05}, [0.5, 0.56, 0.6, 0.62, 0.63, 0.7], None),
    ({"patience": 1, "mode": "max"}, [0.5, 0.6, 0.6], 2),
    # 'auto' maximises accuracies.
    ({"patience": 1, "monitor": "val_accuracy"}, [0.5, 0.6, 0.55], 2),
    # baseline never beaten: improving epochs never stop, the first flat one does.
    ({"patience": 2, "baseline": 0.5}, [1.0, 0.9, 0.8, 0.7], None),
    ({"patience": 2, "baseline": 0.5}, [1.0, 0.9, 0.95], 2),
    # baseline beaten at epoch 1 resets wait; then two flat epochs stop.
    ({"patience": 2, "baseline": 0.5}, [0.6, 0.4, 0.45, 0.46, 0.47], 3),
    # start_from_epoch: the first two epochs are ignored.
    ({"patience": 0, "start_from_epoch": 2}, [1.0, 2.0, 3.0, 2.5, 2.6], 4),
    ({"patience": 0}, [1.0, 2.0, 3.0, 2.5, 2.6], 1),
    # NaN is never an improvement, but epoch 0 never stops.
    ({"patience": 0}, [NAN, 1.0, 1.1], 2),
]


class FakeModel:
    state = None
    stop_training = False


def run(kwargs, values):
    """Drives the callback as fit does; returns the epoch it stopped at (or None)."""
    kwargs = {"monitor": "val_loss", **kwargs}
    monitor = kwargs["monitor"]
    es = EarlyStopping(**kwargs)
    es.set_model(FakeModel())
    es.on_train_begin()
    for epoch, v in enumerate(values):
        es.on_epoch_end(epoch, {monitor: v})
        if es.model.stop_training:
            return epoch
    return None


@pytest.mark.parametrize("kwargs, values, expected", CASES)
def test_stop_epoch_matches_keras_rules(kwargs, values, expected):
    assert run(kwargs, values) == expected


def _ctx_with_params(value):
    state = create_train_state(nn.Dense(1), "sgd", jnp.zeros((1, 2)), learning_rate=0.1)
    params = {"kernel": jnp.full((2, 1), value), "bias": jnp.zeros(1)}
    return FitContext(state.replace(params=params))


@pytest.mark.parametrize(
    "kwargs, values, best",
    [
        ({"patience": 2}, [1.0, 0.5, 0.7, 0.8], 1),
        # nothing beats the baseline: Keras restores the best of the epochs run.
        ({"patience": 2, "baseline": 0.1}, [1.0, 0.9, 0.95, 0.97], 1),
        # the first monitored epoch counts as best until something improves on it.
        ({"patience": 1, "start_from_epoch": 1}, [0.1, 0.5, 0.6], 1),
    ],
)
def test_restore_best_weights(kwargs, values, best):
    ctx = _ctx_with_params(-1.0)
    es = EarlyStopping(monitor="loss", restore_best_weights=True, **kwargs)
    es.set_model(ctx)
    es.on_train_begin()
    for epoch, v in enumerate(values):
        ctx.state = ctx.state.replace(
            params={"kernel": jnp.full((2, 1), float(epoch)), "bias": jnp.zeros(1)}
        )
        es.on_epoch_end(epoch, {"loss": v})
        if ctx.stop_training:
            break
    es.on_train_end()
    assert float(ctx.state.params["kernel"][0, 0]) == best
    assert es.best_epoch == best


def test_state_round_trip():
    es = EarlyStopping(monitor="loss", patience=3)
    es.set_model(FakeModel())
    es.on_train_begin()
    for epoch, v in enumerate([1.0, 0.5, 0.6]):
        es.on_epoch_end(epoch, {"loss": v})
    clone = EarlyStopping(monitor="loss", patience=3)
    clone.set_state(es.get_state())
    assert (
        clone.get_state()
        == es.get_state()
        == {
            "wait": 1,
            "stopped_epoch": 0,
            "best": 0.5,
            "best_epoch": 1,
        }
    )


def test_auto_mode_unknown_metric_raises():
    with pytest.raises(ConfigError, match="mode='max'"):
        EarlyStopping(monitor="confusion_matrix")


def test_missing_monitor_warns():
    es = EarlyStopping(monitor="val_loss")
    es.set_model(FakeModel())
    with pytest.warns(UserWarning, match="val_loss"):
        es.on_epoch_end(0, {"loss": 1.0})


def test_fit_stops_at_keras_epoch_and_restores():
    """In a real Model.fit: stop at the same epoch as the table, best weights back."""
    values = [1.0, 0.9, 0.91, 0.89, 0.95, 0.96, 0.97, 0.5]
    kernels = []

    def fake_metric(epoch, logs):
        logs["fake"] = values[epoch]
        kernels.append(np.asarray(model.state.params["kernel"]))

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    model = Model(nn.Dense(2))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", learning_rate=0.1)
    es = EarlyStopping(monitor="fake", mode="min", patience=2, restore_best_weights=True)
    history = model.fit(
        x,
        y,
        epochs=len(values),
        verbose=0,
        callbacks=[LambdaCallback(on_epoch_end=fake_metric), es],
    )
    assert history.epoch == list(range(6))  # stopped at epoch 5, like the table's third case
    assert es.stopped_epoch == 5 and es.best_epoch == 3
    np.testing.assert_array_equal(np.asarray(model.state.params["kernel"]), kernels[3])


def test_one_callback_serves_several_fits():
    """Keras 3 resets ``best`` in on_train_begin: a second fit is not judged by the first's best."""
    es = EarlyStopping(monitor="loss", patience=1)
    es.set_model(FitContext(None))
    for values, stopped in (([1.0, 0.1, 0.2, 0.3], 2), ([0.9, 0.8, 0.7, 0.6], 0)):
        es.model.stop_training = False
        es.on_train_begin()
        for epoch, v in enumerate(values):
            es.on_epoch_end(epoch, {"loss": v})
            if es.model.stop_training:
                break
        # The second fit's losses all lie above the first's best (0.1) yet keep improving.
        assert es.stopped_epoch == stopped
    assert es.best == 0.6
