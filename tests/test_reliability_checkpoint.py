"""Fault matrix, checkpoints: disk full, another device count, another model, NaN and best."""

import errno
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxnets import parallel, precision
from jaxnets.callbacks import LambdaCallback, ModelCheckpoint
from jaxnets.checkpoint import CheckpointManager, restore_state
from jaxnets.errors import CheckpointError
from jaxnets.training import create_train_state, fit


class Net(nn.Module):
    width: int = 8

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(3, name="head")(nn.relu(nn.Dense(self.width, name="hidden")(x)))


X = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int32) + (X[:, 1] > 0.5).astype(np.int32)


def _state(width=8):
    return create_train_state(Net(width), "adam", X[:1], learning_rate=0.01)


def _bits(tree):
    leaves = jax.tree.leaves(tree)
    return [np.asarray(x).tobytes() for x in leaves]


def _disk_full_mid_save(monkeypatch):
    """The metadata writer fills the disk: half a file written, then ENOSPC."""

    async def write_then_fail(self, item, directory):
        (directory / "metadata").write_text(json.dumps(item)[:20])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ocp.handlers.JsonCheckpointHandler, "_save_fn", write_then_fail)


def test_disk_full_mid_save_is_a_clear_error_and_keeps_the_previous_step(tmp_path, monkeypatch):
    state = _state()
    with CheckpointManager(tmp_path, keep=None) as mngr:
        mngr.save(state, epoch=1)
        later = state.replace(step=jnp.int32(5))
        _disk_full_mid_save(monkeypatch)
        with pytest.raises(CheckpointError, match="step 5 .*No space left on device") as info:
            mngr.save(later, epoch=2)
        cause = info.value.__cause__
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        assert cause is not None and cause.errno == errno.ENOSPC
        assert mngr.all_steps() == [0]  # no half-written step is visible
        monkeypatch.undo()  # space freed: the same step saves fine
        mngr.save(later, epoch=2)
        assert mngr.all_steps() == [0, 5]
    assert _bits(restore_state(tmp_path, state, step=0).params) == _bits(state.params)


def test_disk_full_during_fit_stops_the_run_and_it_resumes_later(tmp_path, monkeypatch):
    fresh = lambda: jax.tree.map(jnp.copy, _state())
    expected, _ = fit(fresh(), (X, Y), epochs=3, batch_size=8, verbose=0)

    def fill_disk(epoch, logs):  # epoch 1's checkpoint is the first to hit a full disk
        if epoch == 1:
            _disk_full_mid_save(monkeypatch)

    hook = LambdaCallback(on_epoch_end=fill_disk)
    with pytest.raises(CheckpointError, match="No space left"):
        fit(fresh(), (X, Y), epochs=3, batch_size=8, verbose=0, workdir=tmp_path, callbacks=[hook])
    monkeypatch.undo()
    state, history = fit(fresh(), (X, Y), epochs=3, batch_size=8, verbose=0, workdir=tmp_path)
    assert _bits(state.params) == _bits(expected.params) and len(history["loss"]) == 3


@pytest.mark.eight_devices
@pytest.mark.parametrize("save_on, resume_on", [(1, 8), (8, 1)])
def test_restore_on_another_device_count(tmp_path, save_on, resume_on):
    engines = {1: None, 8: parallel.make_engine(devices=8)}
    kw = {"batch_size": 16, "verbose": 0, "workdir": tmp_path}
    fit(_state(), (X, Y), epochs=1, engine=engines[save_on], **kw)
    state, history = fit(_state(), (X, Y), epochs=2, engine=engines[resume_on], **kw)
    assert int(state.step) == 4 and len(history["loss"]) == 2
    leaf = jax.tree.leaves(state.params)[0]
    assert len(leaf.sharding.device_set) == resume_on
    # The same run on one device, uninterrupted: equal up to the order of float sums.
    reference, _ = fit(_state(), (X, Y), epochs=2, batch_size=16, verbose=0)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(reference.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_resuming_with_another_model_fails_before_training(tmp_path):
    fit(_state(), (X, Y), epochs=1, batch_size=8, verbose=0, workdir=tmp_path)
    other = _state(width=6)
    with pytest.raises(CheckpointError, match=r"params/hidden/kernel: saved \(4, 8\) float32, expected \(4, 6\)"):  # fmt: skip
        fit(other, (X, Y), epochs=2, batch_size=8, verbose=0, workdir=tmp_path)
    assert int(other.step) == 0 and np.isfinite(other.params["hidden"]["kernel"]).all()


def test_model_checkpoint_best_only_never_takes_a_nan(tmp_path):
    losses = iter([1.0, float("nan"), 2.0, 0.5])

    def fake_loss(epoch, logs):  # runs before ModelCheckpoint reads the logs
        logs["loss"] = next(losses)

    saver = ModelCheckpoint(str(tmp_path / "e{epoch}"), monitor="loss", save_best_only=True)
    fit(_state(), (X, Y), epochs=4, batch_size=8, verbose=0,
        callbacks=[LambdaCallback(on_epoch_end=fake_loss), saver])  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e1", "e4"] and saver.best == 0.5


def test_float16_loss_scale_survives_a_resume(tmp_path):
    def fp16():
        state = create_train_state(Net(), "adam", X[:1], learning_rate=0.01, precision="float16")
        return state.replace(loss_scale=precision.DynamicScale.create(initial=2.0**40, period=3))

    kw = {"batch_size": 8, "verbose": 0}
    expected, _ = fit(fp16(), (X, Y), epochs=3, **kw)
    fit(fp16(), (X, Y), epochs=1, workdir=tmp_path, **kw)  # then the process "dies"
    state, _ = fit(fp16(), (X, Y), epochs=3, workdir=tmp_path, **kw)
    assert float(state.loss_scale.scale) == float(expected.loss_scale.scale) < 2.0**40
    assert int(state.skipped) == int(expected.skipped) > 0
    assert _bits(state.params) == _bits(expected.params)
