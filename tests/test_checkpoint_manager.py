"""CheckpointManager: whole-run round trip, retention, NaN-safe keep-best, async errors,
crash and corruption recovery, and the one error listing every structural mismatch."""

import functools
import json
import math
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets.callbacks import Callback
from jaxnets.checkpoint import CheckpointFallbackWarning, CheckpointManager, restore_state
from jaxnets.errors import CheckpointError
from jaxnets.training import create_train_state, train_step


class TinyNet(nn.Module):
    """Dense-BatchNorm-Dropout-Dense: params, batch_stats and per-step dropout keys."""

    width: int = 8

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(self.width, use_bias=False, name="hidden")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(x)
        x = nn.Dropout(0.2, deterministic=not train)(nn.relu(x))
        return nn.Dense(3, name="head")(x)


X = np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32)
BATCH = {"x": X, "y": np.arange(16) % 3, "mask": np.ones(16, np.float32)}


STEP = jax.jit(train_step)


@functools.cache
def make_state(model=TinyNet(), steps=0):
    """A state after ``steps`` training steps (cached: initialization compiles each time)."""
    if steps:
        return STEP(make_state(model, steps - 1), BATCH)[0]
    return create_train_state(model, "adam", X[:1], learning_rate=1e-2)


def assert_bitwise(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), strict=True)


class Counter(Callback):
    def __init__(self):
        super().__init__()
        self.state = {"best": math.inf, "wait": 2, "seen": np.arange(3, dtype=np.int32)}

    def get_state(self):
        return self.state

    def set_state(self, state):
        self.state = state


def test_round_trip_restores_the_whole_run(tmp_path):
    state = make_state(steps=3).replace(rng=jax.random.key(42))
    history = {"loss": [1.0, float("nan")], "per_class": [np.array([0.5, 0.25], np.float32)]}
    sums = {"loss": {"total": jnp.float32(3.5), "count": jnp.float32(7.0)}}
    with CheckpointManager(tmp_path) as mngr:
        mngr.save(
            state,
            epoch=2,
            step_in_epoch=1,
            history=history,
            callbacks=[Counter()],
            sums=sums,
            data={"seed": 4},
        )
        fresh = Counter()
        run = mngr.restore(make_state(), callbacks=[fresh])
    assert_bitwise(run.state, state)  # params, batch_stats, Adam moments, step, rng, skipped
    assert (run.step, run.epoch, run.step_in_epoch, run.data) == (3, 2, 1, {"seed": 4})
    assert run.history["loss"][0] == 1.0 and math.isnan(run.history["loss"][1])
    np.testing.assert_array_equal(run.history["per_class"][0], history["per_class"][0], strict=True)
    run.apply_callback_states([fresh])
    assert fresh.state["best"] == math.inf and fresh.state["wait"] == 2
    assert fresh.state["seen"].dtype == np.int32
    assert run.sums == {"loss/total": 3.5, "loss/count": 7.0}
    # The restored state trains on exactly like the original.
    assert_bitwise(STEP(run.state, BATCH)[0], STEP(state, BATCH)[0])
    # No pickle anywhere: every file is JSON, Orbax/OCDBT data or a marker.
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert f.read_bytes()[:2] not in (b"\x80\x04", b"\x80\x05"), f


def test_keep_last_n(tmp_path):
    state = make_state()
    with CheckpointManager(tmp_path, keep=2) as mngr:
        for step in range(1, 6):
            mngr.save(state.replace(step=jnp.int32(step)))
        assert mngr.all_steps() == [4, 5]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["4", "5"]


@pytest.mark.parametrize(
    "mode, values, best",
    [("min", [0.5, float("nan"), 0.3, float("nan"), 0.9], 3), ("max", [float("nan"), 0.2, 0.1], 2)],
)
def test_keep_best_never_picks_nan(tmp_path, mode, values, best):
    state = make_state()
    with CheckpointManager(tmp_path, keep=1, keep_best=1, monitor="val_loss", mode=mode) as mngr:
        for step, v in enumerate(values, start=1):
            mngr.save(state.replace(step=jnp.int32(step)), logs={"val_loss": v})
        mngr.save(state.replace(step=jnp.int32(99)))  # mid-epoch: no metric, never "best"
        assert mngr.best_step() == best
        assert mngr.all_steps() == sorted({best, 99})


def test_save_the_same_step_twice_is_an_error(tmp_path):
    with CheckpointManager(tmp_path) as mngr:
        mngr.save(make_state())
        with pytest.raises(CheckpointError, match="already saved"):
            mngr.save(make_state())


def test_async_save_error_surfaces_on_next_save_and_close(tmp_path, monkeypatch):
    from orbax.checkpoint._src.checkpointers import async_checkpointer

    state = make_state()
    mngr = CheckpointManager(tmp_path, async_save=True)
    mngr.save(state)
    mngr.wait()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(async_checkpointer, "_background_wait_for_commit_futures", fail)
    mngr.save(state.replace(step=jnp.int32(1)))  # returns: the failure happens in the background
    with pytest.raises(CheckpointError, match=r"step 1 .*disk full"):
        mngr.save(state.replace(step=jnp.int32(2)))
    mngr.save(state.replace(step=jnp.int32(3)))
    with pytest.raises(CheckpointError, match=r"step 3 .*disk full"):
        mngr.close()
    monkeypatch.undo()
    assert restore_state(tmp_path, state) is not None
    with CheckpointManager(tmp_path, read_only=True) as reader:
        assert reader.all_steps() == [0]  # failed steps never appear


def test_mismatched_restore_lists_every_problem_in_one_error(tmp_path):
    class Other(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.Dense(6, use_bias=False, name="hidden")(x)  # wrong shape
            x = nn.Dense(4, name="extra")(x)  # missing from the checkpoint
            return nn.Dense(3, name="head", param_dtype=jnp.bfloat16)(x)  # wrong dtype

    with CheckpointManager(tmp_path) as mngr:
        mngr.save(make_state())
        with pytest.raises(CheckpointError) as info:
            mngr.restore(make_state(model=Other()))
    msg = str(info.value)
    assert "params/extra/kernel: expected (6, 4) float32" in msg  # missing
    assert "params/bn/scale: saved (8,) float32" in msg  # unexpected
    assert "params/hidden/kernel: saved (5, 8) float32, expected (5, 6) float32" in msg
    assert "params/head/kernel: saved (8, 3) float32, expected (4, 3) bfloat16" in msg
    assert "model_state/batch_stats/bn/mean: saved (8,) float32" in msg
    assert "opt_state/inner_state/0/mu/extra/bias" in msg  # the optimizer state is checked too
    assert msg.count("\n") > 10 and "skip_mismatch=True" in msg


def _save_steps(path, n=2):
    states = [make_state(steps=k) for k in range(1, n + 1)]
    with CheckpointManager(path, keep=None) as mngr:
        for s in states:
            mngr.save(s, epoch=int(s.step))
    return states


def test_crash_mid_save_keeps_previous_step(tmp_path):
    states = _save_steps(tmp_path)
    # What a process killed while writing step 3 leaves: Orbax's temporary folder, half full.
    tmp = tmp_path / "3.orbax-checkpoint-tmp-1712345678"
    shutil.copytree(tmp_path / "2", tmp)
    for f in list((tmp / "arrays").rglob("*"))[::2]:
        if f.is_file():
            f.unlink()
    run = CheckpointManager(tmp_path, read_only=True).restore(make_state())
    assert run.step == 2
    assert_bitwise(run.state, states[1])
    with CheckpointManager(tmp_path) as mngr:  # a writer cleans it up and saves step 3 again
        mngr.save(make_state(steps=3))
        assert mngr.all_steps() == [1, 2, 3]
    assert not tmp.exists()


def _corrupt_data(step_dir):
    data = [f for f in (step_dir / "arrays").rglob("*") if f.is_file() and f.parent.name == "d"]
    assert data
    for f in data:
        raw = bytearray(f.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        f.write_bytes(bytes(raw))


def _damage(step_dir, damage):
    meta_file = step_dir / "meta" / "metadata"
    if damage == "data":
        _corrupt_data(step_dir)
    elif damage == "meta":
        meta_file.write_text("{not json")
    else:  # data that reads back fine but differs from what was saved
        meta = json.loads(meta_file.read_text())
        meta["checksums"]["state/params/head/bias"] = "00000000"
        meta_file.write_text(json.dumps(meta))


# A failed tensorstore read leaves callbacks on Orbax's closed event loop ("Event loop is
# closed", printed as ignored exceptions); harmless, but pytest turns them into errors.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", ["data", "meta", "checksum"])
def test_corrupted_latest_step_falls_back_to_previous(tmp_path, damage):
    states = _save_steps(tmp_path)
    _damage(tmp_path / "2", damage)
    with pytest.raises(CheckpointError, match="step 2 .* (corrupted|unreadable)"):
        CheckpointManager(tmp_path, read_only=True).restore(make_state(), step=2)
    with pytest.warns(CheckpointFallbackWarning, match="restored step 1"):
        run = CheckpointManager(tmp_path).restore(make_state())
    assert run.step == 1
    assert_bitwise(run.state, states[0])
    # The damaged step is set aside, so the resumed run can save step 2 again.
    assert (tmp_path / "2.corrupt").is_dir() and not (tmp_path / "2").exists()
    with CheckpointManager(tmp_path) as mngr:
        mngr.save(states[1])
        assert mngr.all_steps() == [1, 2]


def test_no_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint directory"):
        restore_state(tmp_path / "nowhere", make_state())
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        CheckpointManager(tmp_path).restore(make_state())


def test_model_hyperparameters_are_saved_and_restored(tmp_path):
    from jaxnets.training.state import set_model_hyperparam

    state = set_model_hyperparam(make_state(), "dropout_rate", 0.375)
    with CheckpointManager(tmp_path) as mngr:
        mngr.save(state)
    target = set_model_hyperparam(make_state(), "dropout_rate", 0.0)
    assert float(restore_state(tmp_path, target).hparams["dropout_rate"]) == 0.375
    with pytest.raises(CheckpointError, match="dropout_rate"):  # a target without it: named
        restore_state(tmp_path, make_state())
