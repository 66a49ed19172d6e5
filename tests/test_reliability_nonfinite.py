"""Fault matrix, NaN during a run: TerminateOnNaN stops it, on_nonfinite="rollback" recovers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets.callbacks import LambdaCallback, TerminateOnNaN
from jaxnets.errors import ConfigError, UnknownNameError
from jaxnets.training import create_train_state, fit


class TinyNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.BatchNorm(use_running_average=not train)(nn.Dense(8, use_bias=False)(x))
        return nn.Dense(3)(nn.Dropout(0.1, deterministic=not train)(nn.relu(x)))


X = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int32) + (X[:, 1] > 0.5).astype(np.int32)
STATE = create_train_state(TinyNet(), "adam", X[:1], learning_rate=0.01)


def _fresh():
    return jax.tree.map(jnp.copy, STATE)  # fit donates its input


def _bits(tree):
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


def test_terminate_on_nan_stops_at_the_bad_batch_and_keeps_the_last_good_state(capsys):
    x = X.copy()
    x[19, 2] = np.nan  # batch 2 of epoch 0 (no shuffle, 8 rows per batch)
    kw = {"batch_size": 8, "shuffle": False, "verbose": 0, "allow_nonfinite": True}
    state, history = fit(
        _fresh(), (x, Y), epochs=3, log_every=1, callbacks=[TerminateOnNaN()], **kw
    )
    assert "invalid loss, terminating training" in capsys.readouterr().out
    assert int(state.step) == 3 and int(state.skipped) == 1  # stopped right after it
    assert len(history["loss"]) == 1 and np.isnan(history["loss"][0])
    # The last good state is the one after the two good batches, bitwise.
    good, _ = fit(_fresh(), (x[:16], Y[:16]), epochs=1, **kw)
    for part in ("params", "opt_state", "model_state"):
        assert _bits(getattr(state, part)) == _bits(getattr(good, part)), part


def test_rollback_restores_the_newest_checkpoint_after_a_diverged_epoch(tmp_path):
    seen = {}

    def diverge(epoch, logs):  # params blown up in epoch 1: every update of it is non-finite
        if epoch == 1:
            holder.state = holder.state.replace(
                params=jax.tree.map(lambda p: p * jnp.nan, holder.state.params)
            )

    def record(epoch, logs):
        seen[epoch] = (int(holder.state.step), _bits(holder.state.params))

    class Holder:
        state = None
        stop_training = False

    holder = Holder()
    callbacks = [LambdaCallback(on_epoch_begin=diverge, on_epoch_end=record)]
    state, history = fit(
        _fresh(), (X, Y), epochs=3, batch_size=8, verbose=0, workdir=tmp_path,
        on_nonfinite="rollback", callbacks=callbacks, callback_model=holder,
    )  # fmt: skip
    assert history["skipped"] == [0, 4, 0]
    assert seen[1] == (8, seen[0][1])  # epoch 0's checkpoint; the step count moves on
    assert int(state.step) == 12 and np.isfinite(history["loss"][2])
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state.params))


def test_rollback_without_a_checkpoint_yet_keeps_the_guarded_state(tmp_path):
    x = X.copy()
    x[3] = np.inf
    state, history = fit(
        _fresh(), (x, Y), epochs=1, batch_size=8, verbose=0, workdir=tmp_path,
        on_nonfinite="rollback", allow_nonfinite=True,
    )  # fmt: skip
    assert history["skipped"] == [1] and int(state.step) == 4


def test_rollback_options_are_checked():
    with pytest.raises(ConfigError, match="pass workdir="):
        fit(_fresh(), (X, Y), on_nonfinite="rollback", verbose=0)
    with pytest.raises(UnknownNameError, match="did you mean 'rollback'"):
        fit(_fresh(), (X, Y), on_nonfinite="rolback", verbose=0)
