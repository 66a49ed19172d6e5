"""Callbacks, learning rates and the Keras facade's loops against Keras 3.15 (JAX backend).

Each expected value was observed by running the same script with Keras 3.15 on
the JAX backend (weights copied with get_weights/set_weights where numbers
must match); Keras is not needed here.
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnets
from jaxnets import layers, optim
from jaxnets.callbacks import Callback, CSVLogger, ReduceLROnPlateau, TerminateOnNaN
from jaxnets.training import create_train_state
from jaxnets.training.loop import FitContext


def _xy(n=16):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return x, (x[:, :1] > 0).astype(np.float32)


def _plateau_lrs(values, **kwargs):
    """The rate in effect after each epoch when ``values`` are logged under ``monitor``."""
    state = create_train_state(nn.Dense(2), "sgd", jnp.zeros((1, 3)), learning_rate=1.0)
    ctx = FitContext(state)
    cb = ReduceLROnPlateau(factor=0.5, patience=1, **kwargs)
    cb.set_model(ctx)
    cb.on_train_begin()
    out = []
    for epoch, v in enumerate(values):
        cb.on_epoch_end(epoch, {kwargs["monitor"]: v})
        out.append(float(optim.get_hyperparam(ctx.state.opt_state)))
    return out


@pytest.mark.parametrize("monitor", ["val_precision", "recall", "val_f1"])
def test_reduce_lr_auto_mode_maximises_metrics_that_go_up(monitor):
    # Keras 3 gives ReduceLROnPlateau EarlyStopping's mode 'auto' (the metric's
    # direction). A sigmoid model monitoring val_precision / recall logged lr
    # [0.2, 0.2, 0.2, 0.2, 0.1, ...] in Keras; the old rule ("acc" in the name,
    # else minimise) halved it from the second epoch on while precision rose.
    assert _plateau_lrs([0.5, 0.6, 0.7, 0.7], monitor=monitor) == [1.0, 1.0, 1.0, 0.5]


def test_reduce_lr_negative_min_delta_counts_by_its_size():
    # Keras takes abs(min_delta): with min_delta=-0.3 a drop of 0.1 is no improvement.
    # (Keras's run logged lr 0.2, 0.2, 0.2, 0.1, 0.05...; the old code never reduced.)
    lrs = _plateau_lrs([1.0, 0.9, 0.8, 0.7], monitor="loss", min_delta=-0.3)
    assert lrs == [1.0, 0.5, 0.25, 0.125]


def test_reduce_lr_auto_mode_unknown_metric_is_refused():
    # Keras raises a ValueError for a name whose direction it cannot tell.
    with pytest.raises(jaxnets.errors.ConfigError, match="pass mode='max' or mode='min'"):
        ReduceLROnPlateau(monitor="val_my_score")


def test_terminate_on_nan_raise_error_raises_runtime_error():
    # Keras 3.15's TerminateOnNaN(raise_error=True) raises a RuntimeError; it was a TypeError.
    cb = TerminateOnNaN(raise_error=True)
    cb.set_model(FitContext(None))
    cb.on_train_batch_end(2, {"loss": 0.5})
    with pytest.raises(RuntimeError, match="NaN or Inf loss encountered at batch 3"):
        cb.on_train_batch_end(3, {"loss": float("nan")})
    assert not cb.model.stop_training


def test_terminate_on_nan_raise_error_inside_fit():
    x, y = _xy()
    x[3, 0] = np.nan
    model = jaxnets.Sequential([layers.Dense(1, input_shape=(3,))])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(RuntimeError, match="Terminating training immediately"):
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=2,
            verbose=0,
            allow_nonfinite=True,
            callbacks=[TerminateOnNaN(raise_error=True)],
        )


def test_csv_logger_without_validation_has_keras_val_columns(tmp_path):
    # Keras writes val_* columns (NA) when the logs have no val_ key:
    # "epoch;accuracy;loss;val_accuracy;val_loss" then "0;0.6...;0.61...;NA;NA".
    x, y = _xy()
    model = jaxnets.Sequential([layers.Dense(1, activation="sigmoid", input_shape=(3,))])
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    path = tmp_path / "log.csv"
    model.fit(x, y, epochs=2, verbose=0, callbacks=[CSVLogger(path, separator=";")])
    lines = path.read_text().splitlines()
    assert lines[0] == "epoch;accuracy;loss;skipped;val_accuracy;val_loss;val_skipped"
    assert [ln.split(";")[0] for ln in lines[1:]] == ["0", "1"]
    assert all(ln.endswith(";NA;NA;NA") for ln in lines[1:])
    # with validation the header is the logged keys only, as in Keras
    model.fit(x, y, epochs=1, verbose=0, validation_data=(x, y), callbacks=[CSVLogger(path)])
    assert path.read_text().splitlines()[0] == ("epoch,accuracy,loss,skipped,val_accuracy,val_loss")


def test_optimizer_learning_rate_before_build():
    # Keras: model.optimizer exists from compile on; Adam(0.01) reads 0.01 and a
    # rate set before the first fit is the one training uses (0.5 after fit).
    model = jaxnets.Sequential([layers.Dense(1)])
    assert model.optimizer is None  # not compiled: None, as in Keras
    model.compile(optimizer="adam", learning_rate=0.01, loss="mse")
    assert not model.built
    assert model.optimizer.learning_rate == pytest.approx(0.01)
    model.optimizer.learning_rate = 0.5
    assert model.optimizer.learning_rate == pytest.approx(0.5)
    x, y = _xy()
    model.fit(x, y, epochs=1, verbose=0)
    assert model.optimizer.learning_rate == pytest.approx(0.5)
    # a new compile is a new optimizer: the rate set before is gone
    model.compile(optimizer="adam", learning_rate=0.01, loss="mse")
    assert model.optimizer.learning_rate == pytest.approx(0.01)


def test_optimizer_rate_set_before_build_is_used_by_the_first_step():
    x, y = _xy(8)
    # SGD at 0.5 set through model.optimizer before build == SGD compiled at 0.5.
    models = []
    for lr, late in ((0.01, 0.5), (0.5, None)):
        m = jaxnets.Sequential([layers.Dense(1)])
        m.compile(optimizer="sgd", learning_rate=lr, loss="mse")
        if late is not None:
            m.optimizer.learning_rate = late
        m.build((None, 3))
        m.set_weights([np.ones((3, 1), np.float32), np.zeros(1, np.float32)])
        m.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
        models.append(m.get_weights())
    for a, b in zip(*models, strict=True):
        np.testing.assert_array_equal(a, b)


def test_learning_rate_zero_keeps_the_weights():
    # Keras accepts SGD(learning_rate=0.0): fit runs and the weights stay bitwise.
    x, y = _xy()
    for name in ("sgd", "adam", "adamw"):
        model = jaxnets.Sequential([layers.Dense(1, input_shape=(3,))])
        model.compile(optimizer=name, learning_rate=0.0, loss="mse")
        before = model.get_weights()
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
        for a, b in zip(before, model.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(jaxnets.errors.ConfigError, match="learning_rate must be a number >= 0"):
        optim.make_optimizer("sgd", learning_rate=-0.1)


class _Params(Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_begin(self, logs=None):
        self.seen.append(dict(self.params))

    def on_test_begin(self, logs=None):
        self.seen.append(dict(self.params))

    def on_predict_begin(self, logs=None):
        self.seen.append(dict(self.params))


@pytest.mark.parametrize("verbose", ["auto", 0, 2])
def test_callback_params_carry_fit_verbose(verbose, capsys):
    # Keras: set_params({'verbose': <fit's verbose, as given>, 'epochs': 2, 'steps': 2});
    # the callbacks saw verbose 0 whatever fit was given.
    x, y = _xy(40)
    model = jaxnets.Sequential([layers.Dense(1, input_shape=(3,))])
    model.compile(optimizer="sgd", loss="mse")
    cb = _Params()
    history = model.fit(x, y, batch_size=20, epochs=2, verbose=verbose, callbacks=[cb])
    assert cb.seen == [{"verbose": verbose, "epochs": 2, "steps": 2}]
    assert history.params == {"verbose": verbose, "epochs": 2, "steps": 2}
    capsys.readouterr()


def test_evaluate_and_predict_set_params_as_keras():
    # Keras: {'verbose': 0, 'epochs': 1, 'steps': 2} for 40 rows in batches of 20.
    x, y = _xy(40)
    model = jaxnets.Sequential([layers.Dense(1, input_shape=(3,))])
    model.compile(optimizer="sgd", loss="mse")
    cb = _Params()
    model.evaluate(x, y, batch_size=20, verbose=0, callbacks=[cb])
    model.predict(x, batch_size=20, verbose=0, callbacks=[cb])
    assert cb.seen == [{"verbose": 0, "epochs": 1, "steps": 2}] * 2


def test_on_batch_end_alias_runs_after_every_batch():
    # Keras's Callback.on_train_batch_end calls on_batch_end (and begin likewise): a
    # Keras callback overriding only the old names saw begin/end for batches 0, 1, 2
    # (48 rows in batches of 16); jaxnets never called them.
    class OldNames(Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_batch_begin(self, batch, logs=None):
            self.seen.append(("begin", batch))

        def on_batch_end(self, batch, logs=None):
            self.seen.append(("end", batch, sorted(logs)))

    x, y = _xy(48)
    model = jaxnets.Sequential([layers.Dense(1, input_shape=(3,))])
    model.compile(optimizer="sgd", loss="mse")
    cb = OldNames()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[cb])
    assert cb.seen == [s for b in range(3) for s in (("begin", b), ("end", b, ["loss"]))]


def test_validation_steps_and_batch_size_take_the_first_rows():
    # Keras validates on the first validation_steps * (validation_batch_size or
    # batch_size) rows: val_loss equalled evaluate(x_val[:8]) for validation_steps=1
    # (batch_size 8), evaluate(x_val[:6]) for (2, 3) and all 10 rows for
    # validation_batch_size=3 alone. Both were refused by name before.
    x, y = _xy(40)
    xv, yv = x[:10], y[:10]
    for kwargs, rows in (
        ({"validation_steps": 1}, 8),
        ({"validation_steps": 2, "validation_batch_size": 3}, 6),
        ({"validation_batch_size": 3}, 10),
    ):
        model = jaxnets.Sequential([layers.Dense(1, input_shape=(3,))])
        model.compile(optimizer="sgd", loss="mse")
        h = model.fit(x, y, batch_size=8, verbose=0, validation_data=(xv, yv), **kwargs)
        expected = model.evaluate(xv[:rows], yv[:rows], verbose=0)
        assert h.history["val_loss"] == [pytest.approx(expected, rel=1e-6)]
    # an iterable of batches: the first validation_steps batches
    batches = iter([(xv[i : i + 4], yv[i : i + 4]) for i in range(0, 12, 4)])
    h = model.fit(x, y, batch_size=8, verbose=0, validation_data=batches, validation_steps=1)
    assert h.history["val_loss"] == [pytest.approx(model.evaluate(xv[:4], yv[:4], verbose=0))]
    with pytest.raises(jaxnets.errors.ConfigError, match="validation_steps must be a positive"):
        model.fit(x, y, verbose=0, validation_data=(xv, yv), validation_steps=0)
    with pytest.raises(jaxnets.errors.ConfigError, match="validation_freq"):
        model.fit(x, y, verbose=0, validation_data=(xv, yv), validation_freq=2)


def test_tensorboard_takes_keras_arguments(tmp_path):
    # Keras 3.15's signature: (log_dir, histogram_freq, write_graph, write_images,
    # write_steps_per_second, update_freq, profile_batch, embeddings_freq,
    # embeddings_metadata); update_freq="batch" means 1.
    from jaxnets.callbacks import TensorBoard

    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    x, y = _xy(32)
    model = jaxnets.Sequential([layers.Dense(1, input_shape=(3,))])
    model.compile(optimizer="sgd", loss="mse")
    tb = TensorBoard(tmp_path, 0, True, False, True, "batch")
    assert tb.update_freq == 1
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, log_every=1, callbacks=[tb])
    acc = ea.EventAccumulator(str(tmp_path / "train"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("batch_loss")] == list(range(1, 9))
    assert [e.step for e in acc.Scalars("epoch_steps_per_second")] == [0, 1]
    assert all(e.value > 0 for e in acc.Scalars("epoch_steps_per_second"))
    with pytest.raises(jaxnets.errors.ConfigError, match="profile_batch=5"):
        TensorBoard(tmp_path, profile_batch=5)
    with pytest.raises(jaxnets.errors.ConfigError, match="update_freq must be"):
        TensorBoard(tmp_path, update_freq="step")


def test_optimizer_learning_rate_with_a_schedule_is_the_next_steps():
    # Keras (SGD(ExponentialDecay(0.1, decay_steps=5, decay_rate=0.5)), 5 steps an
    # epoch) read model.optimizer.learning_rate as 0.05, 0.025, 0.0125 at the epoch
    # ends: the rate of the next step. jaxnets read the last step's (0.0574, ...).
    import optax

    class Rates(Callback):
        def __init__(self):
            super().__init__()
            self.rates = []

        def on_epoch_end(self, epoch, logs=None):
            self.rates.append(self.model.optimizer.learning_rate)

    x, y = _xy(40)
    model = jaxnets.Sequential([layers.Dense(1, input_shape=(3,))])
    model.compile(optimizer="sgd", loss="mse", learning_rate=optax.exponential_decay(0.1, 5, 0.5))
    assert model.optimizer.learning_rate == pytest.approx(0.1)
    cb = Rates()
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[cb])
    np.testing.assert_allclose(cb.rates, [0.05, 0.025, 0.0125], rtol=1e-6)
    model.compile(optimizer="sgd", loss="mse", learning_rate=0.2)  # a number again
    assert model.optimizer.learning_rate == pytest.approx(0.2)


def test_evaluate_and_predict_steps_take_the_first_batches_of_arrays():
    # Keras: evaluate(x, y, batch_size=8, steps=1) == evaluate(x[:8], y[:8]) and
    # predict(x, batch_size=8, steps=2) has 16 rows. jaxnets refused the first and
    # silently ignored steps in the second (40 rows).
    x, y = _xy(40)
    model = jaxnets.Sequential([layers.Dense(1, input_shape=(3,))])
    model.compile(optimizer="sgd", loss="mse")
    first = model.evaluate(x[:8], y[:8], verbose=0)
    assert model.evaluate(x, y, batch_size=8, steps=1, verbose=0) == pytest.approx(first)
    out = model.predict(x, batch_size=8, steps=2, verbose=0)
    np.testing.assert_array_equal(out, model.predict(x[:16], batch_size=8, verbose=0))
    with pytest.raises(jaxnets.errors.ConfigError, match="steps must be a positive integer"):
        model.predict(x, steps=0, verbose=0)


def test_fit_calls_the_test_hooks_around_each_epochs_validation():
    # Keras 3 calls on_test_begin / on_test_end (with the validation metrics, no
    # val_ prefix) around each epoch's validation, before on_epoch_end.
    from jaxnets.training import fit

    class Record(Callback):
        def __init__(self):
            super().__init__()
            self.calls = []

        def on_test_begin(self, logs=None):
            self.calls.append("test_begin")

        def on_test_end(self, logs=None):
            self.calls.append(("test_end", sorted(logs)))

        def on_epoch_end(self, epoch, logs=None):
            self.calls.append("epoch_end")

    x, y = _xy()
    state = create_train_state(nn.Dense(2), "sgd", x[:1], learning_rate=0.1)
    rec = Record()
    fit(state, (x, y[:, 0].astype(np.int32)), epochs=2, batch_size=8, verbose=0,
        validation_data=(x[:6], y[:6, 0].astype(np.int32)), callbacks=[rec])  # fmt: skip
    one = ["test_begin", ("test_end", ["accuracy", "loss"]), "epoch_end"]
    assert rec.calls == one + one
