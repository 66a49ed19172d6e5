"""fit(workdir=...): resume exactly, mid-epoch included; kill -9 and crash-mid-save in subprocesses."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets.callbacks import Callback
from jaxnets.checkpoint import CheckpointManager
from jaxnets.errors import CheckpointError, ConfigError
from jaxnets.training import create_train_state, fit

SCRIPT = Path(__file__).parent / "scripts" / "resume_run.py"
RNG = np.random.default_rng(0)
X = RNG.normal(size=(50, 4)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int32)


class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dropout(0.2, deterministic=not train)(nn.relu(nn.Dense(8)(x)))
        return nn.Dense(2)(x)


class Stopper(Callback):
    """Stops after ``patience`` epochs; its counter resets in on_train_begin like Keras's."""

    def __init__(self, patience):
        super().__init__()
        self.patience = patience

    def on_train_begin(self, logs=None):
        self.seen = 0

    def on_epoch_end(self, epoch, logs=None):
        self.seen += 1
        if self.seen >= self.patience:
            self.model.stop_training = True

    def get_state(self):
        return {"seen": self.seen}

    def set_state(self, state):
        self.seen = state["seen"]


STATE = create_train_state(Net(), "adam", X[:1], learning_rate=1e-2, seed=3)


def fresh():
    return jax.tree.map(jnp.copy, STATE)  # fit donates the state it is given


def run(epochs=3, **kwargs):
    kwargs.setdefault("verbose", 0)
    return fit(fresh(), (X, Y), epochs=epochs, batch_size=16, seed=7, **kwargs)


def assert_same_params(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), strict=True)


def test_resume_mid_epoch_is_bitwise_exact(tmp_path):
    reference, ref_history = run()
    run(workdir=tmp_path, save_every=3, keep=None)  # 4 steps per epoch: saves 3, 6, 9, 12
    ckpts = tmp_path / "checkpoints"
    assert sorted(int(p.name) for p in ckpts.iterdir()) == [3, 6, 9, 12]
    for later in (9, 12):  # as if killed after the mid-epoch save of step 6
        os.rename(ckpts / str(later), tmp_path / f"gone{later}")
    with CheckpointManager(ckpts) as mngr:
        run6 = mngr.restore(fresh())
    assert (run6.epoch, run6.step_in_epoch, run6.sums is not None) == (1, 2, True)
    state, history = run(workdir=tmp_path, save_every=3, keep=None)
    assert_same_params(state.params, reference.params)
    assert_same_params(state.opt_state, reference.opt_state)
    assert history == ref_history  # the resumed epoch's metrics include its first half


def test_complete_run_does_nothing_and_more_epochs_continue(tmp_path):
    reference, ref_history = run(epochs=4)
    state, history = run(epochs=2, workdir=tmp_path)
    again, history2 = run(epochs=2, workdir=tmp_path)
    assert int(again.step) == int(state.step) == 8 and history2 == history
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["4", "8"]
    longer, history4 = run(epochs=4, workdir=tmp_path)
    assert_same_params(longer.params, reference.params)
    assert history4 == ref_history


def test_callback_state_survives_and_a_stopped_run_stays_stopped(tmp_path):
    stopper = Stopper(patience=3)
    run(epochs=2, workdir=tmp_path, callbacks=[stopper])
    state, history = run(epochs=10, workdir=tmp_path, callbacks=[stopper])
    assert stopper.seen == 3 and len(history["loss"]) == 3  # 2 + 1, not 2 + 3
    again, history2 = run(epochs=10, workdir=tmp_path, callbacks=[Stopper(patience=3)])
    assert int(again.step) == int(state.step) and history2 == history


def test_resuming_with_another_data_order_is_an_error(tmp_path):
    run(epochs=1, workdir=tmp_path)
    with pytest.raises(CheckpointError, match="seed=7 \\(now 8\\)"):
        fit(fresh(), (X, Y), epochs=2, batch_size=16, seed=8, verbose=0, workdir=tmp_path)
    with pytest.raises(ConfigError, match="save_every"):
        run(workdir=tmp_path / "b", save_every=0)


def _script(out, *args, **popen):
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(out), *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        **popen,
    )


def _finish(proc, timeout=240):
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, err.decode()[-3000:]


def _load(out):
    with np.load(f"{out}.npz", allow_pickle=False) as npz:
        params = {k: npz[k] for k in npz.files}
    return params, json.loads(Path(f"{out}.json").read_text())


def _steps(ckpts):
    return [int(p.name) for p in ckpts.iterdir() if p.name.isdigit()] if ckpts.is_dir() else []


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("fused", [False, True], ids=["per_step", "fused_epoch"])
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path, fused):
    extra = ["--fuse"] if fused else []
    ref = _script(tmp_path / "ref", *extra)
    _finish(ref)
    workdir = tmp_path / "run"
    ckpts = workdir / "checkpoints"
    slow = _script(tmp_path / "killed", "--workdir", workdir, "--sleep", 0.15, *extra)
    deadline = time.monotonic() + 240
    try:
        # Steps per epoch: 7; saves every 3 steps. Kill after step 9 (epoch 2, batch 2) is saved.
        while max(_steps(ckpts), default=0) < 9:
            assert slow.poll() is None, slow.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the run never saved step 9"
            time.sleep(0.05)
    finally:
        os.kill(slow.pid, signal.SIGKILL)
        slow.communicate(timeout=60)
    assert slow.returncode == -signal.SIGKILL
    killed_at = max(_steps(ckpts))
    # Mid-epoch and not finished (fused runs save at the ends of 3-step scans: 3, 6, 7, 10...).
    assert killed_at < 28 and (fused or killed_at % 7 != 0)
    resumed = _script(tmp_path / "resumed", "--workdir", workdir, *extra)
    _finish(resumed)
    (p_ref, h_ref), (p_res, h_res) = _load(tmp_path / "ref"), _load(tmp_path / "resumed")
    assert p_ref.keys() == p_res.keys()
    for k in p_ref:
        np.testing.assert_array_equal(p_res[k], p_ref[k], strict=True)
    assert h_res == h_ref and h_res["epochs_seen"] == 4


@pytest.mark.slow
@pytest.mark.subprocess
def test_crash_during_save_resumes_from_previous_checkpoint(tmp_path):
    ref = _script(tmp_path / "ref")
    workdir = tmp_path / "run"
    crash = _script(tmp_path / "crash", "--workdir", workdir, "--die-in-save", 3)
    _finish(ref)
    crash.communicate(timeout=240)
    assert crash.returncode == -signal.SIGKILL
    ckpts = workdir / "checkpoints"
    assert sorted(_steps(ckpts)) == [3, 6]  # the 3rd save (step 9) never committed
    assert [p.name for p in ckpts.iterdir() if p.name.startswith("9.orbax-checkpoint-tmp")]
    resumed = _script(tmp_path / "resumed", "--workdir", workdir)
    _finish(resumed)
    (p_ref, h_ref), (p_res, h_res) = _load(tmp_path / "ref"), _load(tmp_path / "resumed")
    for k in p_ref:
        np.testing.assert_array_equal(p_res[k], p_ref[k], strict=True)
    assert h_res == h_ref


def test_fused_epochs_save_at_chunk_ends_and_resume_exactly(tmp_path):
    reference, ref_history = run(fuse="epoch", chunk_steps=3)
    run(fuse="epoch", chunk_steps=3, workdir=tmp_path, save_every=2, keep=None)
    ckpts = tmp_path / "checkpoints"
    # 4 steps per epoch in chunks of 3 + 1: a save at the end of each chunk that passed
    # a multiple of 2 (mid-epoch 3, 7, 11), and at epoch ends where 4 steps passed one.
    assert sorted(int(p.name) for p in ckpts.iterdir()) == [3, 4, 7, 8, 11, 12]
    for later in (8, 11, 12):
        os.rename(ckpts / str(later), tmp_path / f"gone{later}")
    state, history = run(fuse="epoch", chunk_steps=3, workdir=tmp_path, save_every=2)
    assert_same_params(state.params, reference.params)
    assert history == ref_history
