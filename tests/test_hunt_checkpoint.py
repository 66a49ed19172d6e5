"""Checkpoints, resume, saving and transfer: defects found against the oracles.

The oracles: an uninterrupted run (a resumed run must match it bitwise, its
callbacks included), and Keras 3's behaviour for the facade's saving.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnets
from jaxnets import layers
from jaxnets.callbacks import Callback, ModelCheckpoint
from jaxnets.checkpoint import freeze_params, load_pretrained
from jaxnets.errors import CheckpointError, FormatError
from jaxnets.training import create_train_state, fit

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 4)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int32)


class Interrupt(Exception):
    """Stands in for a killed process."""


class InterruptAt(Callback):
    """Raises at the ``at``-th batch hook (with ``log_every=1``, the ``at``-th step)."""

    def __init__(self, at):
        super().__init__()
        self.at, self.calls = at, 0

    def on_train_batch_end(self, batch, logs=None):
        self.calls += 1
        if self.calls == self.at:
            raise Interrupt


def _bits(tree):
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


def test_model_checkpoint_save_freq_counts_across_a_resume(tmp_path):
    # 5 steps per epoch, a ModelCheckpoint every 3 steps; the run is killed after
    # step 7 and resumes from the mid-epoch checkpoint of step 6 (epoch 2, batch 1).
    # Before the fix the resumed callback forgot its step count: it saved at e2-b3,
    # e3-b1, e3-b4 instead of the uninterrupted run's e2-b4, e3-b2, e3-b5.
    def run(folder, workdir=None, stop=None):
        state = create_train_state(nn.Dense(2), "adam", X[:1], learning_rate=1e-2)
        cb = ModelCheckpoint(str(tmp_path / folder / "e{epoch}-b{batch}"), save_freq=3)
        cbs = [cb] + ([InterruptAt(stop)] if stop else [])
        kw = dict(workdir=workdir, save_every=2) if workdir else {}
        fit(state, (X, Y), epochs=3, batch_size=8, verbose=0, log_every=1, callbacks=cbs, **kw)

    run("reference")
    with pytest.raises(Interrupt):
        run("resumed", tmp_path / "run", stop=7)
    run("resumed", tmp_path / "run")
    saved = sorted(p.name for p in (tmp_path / "resumed").iterdir())
    assert saved == sorted(p.name for p in (tmp_path / "reference").iterdir())
    assert saved == ["e1-b3", "e2-b1", "e2-b4", "e3-b2", "e3-b5"]


def test_load_pretrained_from_a_state_leaves_the_source_usable():
    # fit donates the state it trains; the new state used to alias the source
    # state's arrays, so training it deleted the pretrained model's parameters
    # ("RuntimeError: Array has been deleted").
    class Net(nn.Module):
        classes: int

        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(self.classes, name="head")(nn.relu(nn.Dense(8, name="enc")(x)))

    source = create_train_state(Net(3), "adam", X[:1], learning_rate=1e-2, seed=0)
    before = _bits(source.params)
    target = create_train_state(Net(2), "adam", X[:1], learning_rate=1e-2, seed=1)
    target, report = load_pretrained(target, source, skip_mismatch=True)
    assert report.loaded == ["params/enc/bias", "params/enc/kernel"]
    target = freeze_params(target, ["enc/.*"], learning_rate=1e-2)
    trained, _ = fit(target, (X, Y), epochs=1, batch_size=8, verbose=0)
    assert _bits(source.params) == before  # still readable and unchanged
    assert _bits(trained.params["enc"]) == _bits(source.params["enc"])  # frozen, bitwise


def _dropout_model():
    model = jaxnets.Sequential([
        layers.Dense(8, activation="relu", input_shape=(4,)),
        layers.Dropout(0.3),
        layers.Dense(2, activation="softmax"),
    ])  # fmt: skip
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_a_loaded_model_continues_training_like_the_saved_one(tmp_path):
    # Each fit call of a model shuffles in the order of its call index. The
    # loaded model did not know how many fits the saved one had run, so its next
    # fit replayed the first fit's order and training diverged from the model
    # that was saved.
    model = _dropout_model()
    model.fit(X, Y, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = jaxnets.load_model(tmp_path / "model.keras")
    model.fit(X, Y, epochs=2, batch_size=8, verbose=0)
    loaded.fit(X, Y, epochs=2, batch_size=8, verbose=0)
    assert _bits(loaded.state.params) == _bits(model.state.params)
    assert _bits(loaded.state.opt_state) == _bits(model.state.opt_state)


def test_a_mangled_fit_call_count_is_a_format_error(tmp_path):
    import json

    _dropout_model().save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    (tmp_path / "m" / "model.json").write_text(json.dumps({**meta, "fit_calls": -2}))
    with pytest.raises(FormatError, match="fit_calls must be a non-negative int, got -2"):
        jaxnets.load_model(tmp_path / "m")


def test_load_weights_into_another_architecture_lists_every_difference(tmp_path):
    # Keras raises too; the error used to be Orbax's, naming only the first
    # array that did not fit and none of the missing layers.
    saved = jaxnets.Sequential([layers.Dense(2, input_shape=(4,))])
    saved.build((None, 4))
    saved.save_weights(tmp_path / "w.weights.h5")
    wider = jaxnets.Sequential([layers.Dense(3, input_shape=(4,)), layers.Dense(2)])
    wider.build((None, 4))
    with pytest.raises(CheckpointError) as info:
        wider.load_weights(tmp_path / "w.weights.h5")
    message = str(info.value)
    assert "does not fit the model (4 problems)" in message
    assert "params/layers_0/bias: saved (2,) float32, expected (3,) float32" in message
    assert "params/layers_0/kernel: saved (4, 2) float32, expected (4, 3) float32" in message
    assert "params/layers_1/kernel: expected (3, 2) float32" in message
    same = jaxnets.Sequential([layers.Dense(2, input_shape=(4,))])
    same.build((None, 4))
    same.load_weights(tmp_path / "w.weights.h5")
    x = jnp.asarray(X)
    np.testing.assert_array_equal(same.predict(x, verbose=0), saved.predict(x, verbose=0))


def test_save_best_only_on_a_per_class_metric_saves_like_keras(tmp_path):
    # Keras 3.15 (observed): a non-scalar monitored value warns "Can save best model
    # only when `monitor` is a scalar value ... Falling back to `save_best_only=False`"
    # and saves every epoch. jaxnets crashed with "TypeError: only 0-dimensional
    # arrays can be converted to Python scalars".
    model = jaxnets.Sequential([layers.Dense(2, activation="softmax", input_shape=(4,))])
    model.compile(
        optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["f1_per_class"]
    )
    cb = ModelCheckpoint(
        str(tmp_path / "e{epoch}"), monitor="val_f1_per_class", save_best_only=True, mode="max"
    )
    with pytest.warns(UserWarning, match="Falling back to `save_best_only=False`"):
        model.fit(X, Y, epochs=2, verbose=0, validation_data=(X, Y), callbacks=[cb])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e1", "e2"]


def test_model_checkpoint_refuses_an_unknown_mode_without_save_best_only():
    from jaxnets.errors import ConfigError

    with pytest.raises(ConfigError, match="mode must be 'auto', 'min' or 'max', got 'maxx'"):
        ModelCheckpoint("ckpt", mode="maxx")


def test_a_save_killed_half_way_leaves_the_previous_save_whole(tmp_path, monkeypatch):
    # model.save(overwrite=True) (what ModelCheckpoint calls) deleted the previous
    # save before writing the new one: killed while writing the optimizer state,
    # it left the new weights without train_state, which load_model then loaded
    # as a fresh optimizer at step 0, silently.
    from jaxnets.keras import saving

    model = _dropout_model()
    model.fit(X, Y, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "best")
    saved_params, saved_step = _bits(model.state.params), int(model.state.step)
    model.fit(X, Y, epochs=1, batch_size=8, verbose=0)
    write = saving._write_tree

    def killed_in_train_state(path, tree):
        if path.endswith("train_state"):
            raise KeyboardInterrupt
        write(path, tree)

    monkeypatch.setattr(saving, "_write_tree", killed_in_train_state)
    with pytest.raises(KeyboardInterrupt):
        model.save(tmp_path / "best")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["best"]  # no half-written folder left
    loaded = jaxnets.load_model(tmp_path / "best")
    assert _bits(loaded.state.params) == saved_params
    assert int(loaded.state.step) == saved_step == 5


def test_a_mid_epoch_checkpoint_keeps_the_epochs_starting_skip_count(tmp_path):
    from jaxnets.checkpoint.resume import FitCheckpointer

    state = create_train_state(nn.Dense(2), "sgd", X[:1], learning_rate=0.1)
    ckpt = FitCheckpointer(tmp_path, save_every=2, data={"seed": 0})
    state, *_ = ckpt.resume(state, [], 0, 0, {})
    assert ckpt.epoch_begin(4) == 4  # four updates were skipped before this epoch
    at_step_2 = state.replace(step=jnp.asarray(2, state.step.dtype))
    ckpt.after_step(
        at_step_2, None, epoch=0, step_in_epoch=2, steps=5, history={}, callbacks=[]
    )  # a mid-epoch save
    ckpt.close()
    again = FitCheckpointer(tmp_path, save_every=2, data={"seed": 0})
    again.resume(state, [], 0, 0, {})
    assert again.epoch_begin(6) == 4  # the resumed epoch began with 4
    assert again.epoch_begin(7) == 7  # the next epoch begins now
    again.close()


def test_a_resumed_epoch_counts_the_updates_skipped_before_its_checkpoint(tmp_path):
    # Row 0 holds a NaN: the first batch of every epoch skips its update. Killed
    # after step 7 and resumed from step 6 (epoch 2, batch 1), the resumed run
    # logged skipped [1, 0, 1] against the uninterrupted run's [1, 1, 1].
    x = X.copy()
    x[0, 0] = np.nan

    def run(**kw):
        state = create_train_state(nn.Dense(2), "adam", X[:1], learning_rate=1e-2)
        return fit(state, (x, Y), epochs=3, batch_size=8, verbose=0, log_every=1,
                   shuffle=False, allow_nonfinite=True, **kw)  # fmt: skip

    _, reference = run()
    with pytest.raises(Interrupt):
        run(workdir=tmp_path, save_every=3, callbacks=[InterruptAt(8)])
    _, resumed = run(workdir=tmp_path, save_every=3)
    assert reference["skipped"] == [1, 1, 1]
    assert resumed["skipped"] == reference["skipped"]


def test_restore_best_weights_survives_a_resume(tmp_path):
    # EarlyStopping(restore_best_weights=True) kept its best weights out of its
    # checkpointed state: the resumed run snapshotted the weights of its first
    # epoch as the "best" and ended on other parameters than the uninterrupted run.
    from jaxnets.callbacks import EarlyStopping

    rng = np.random.default_rng(1)
    y = (X[:, 0] + rng.normal(size=len(X)) > 0).astype(np.int32)  # noisy: val_loss wobbles

    def run(**kw):
        state = create_train_state(nn.Dense(2), "sgd", X[:1], learning_rate=2.0, seed=3)
        stop = EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True)
        cbs = [stop, *kw.pop("callbacks", [])]
        out, _ = fit(state, (X, y), epochs=6, batch_size=8, verbose=0, log_every=1,
                     validation_data=(X[:12], y[:12]), callbacks=cbs, **kw)  # fmt: skip
        return out, stop

    reference, stop = run()
    assert stop.best_epoch not in (2, 5)  # the best epoch lies before the interruption
    with pytest.raises(Interrupt):
        run(workdir=tmp_path, callbacks=[InterruptAt(13)])  # killed in epoch 3
    resumed, _ = run(workdir=tmp_path)
    assert _bits(resumed.params) == _bits(reference.params)
