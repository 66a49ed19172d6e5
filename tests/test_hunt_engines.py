"""Bug hunt: the engines, fused training, batching and populations against their oracles.

The oracle of every mode is the per-step loop on one device (`fit` with the
default engine), or a numpy closed form.
"""

import logging

import flax.linen as nn
import jax
import numpy as np
import pytest

from jaxnets import compile as compile_lib
from jaxnets import layers, parallel
from jaxnets.callbacks.base import Callback
from jaxnets.callbacks.early_stopping import EarlyStopping
from jaxnets.data.batching import (
    iterate_batches,
    iterate_bucketed,
    mask_extents,
    pad_to,
    padding_row,
)
from jaxnets.errors import ConfigError, DataError
from jaxnets.population import fit_population
from jaxnets.training import create_train_state, evaluate, fit, train_step
from jaxnets.training.fused import epoch_plan


def max_diff(a, b) -> float:
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in pairs)


# --- padding never copies a non-finite row -------------------------------------------


def nan_in_row_0(n=21):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    x[0, 1] = np.nan
    return x, y


def sgd_dense():
    return create_train_state(nn.Dense(2), "sgd", np.zeros((1, 4), np.float32), learning_rate=0.1)


@pytest.mark.parametrize("fuse", [None, "epoch", "run"])
def test_a_nan_row_0_does_not_leak_into_the_padding_of_the_last_batch(fuse):
    # 21 rows in batches of 8: batch 0 holds the NaN row (its update is rightly
    # skipped); the last batch, rows 16-20 and 3 padding rows, must train. Padding
    # used to repeat row 0, so NaN * mask 0 = NaN skipped it too (skipped was 2).
    x, y = nan_in_row_0()
    state, history = fit(
        sgd_dense(), (x, y), epochs=1, batch_size=8, shuffle=False, verbose=0,
        allow_nonfinite=True, fuse=fuse,
    )  # fmt: skip
    assert history["skipped"] == [1]
    # Oracle: the same two updates on the finite rows alone (plain SGD: no step count).
    ref, _ = fit(sgd_dense(), (x[8:], y[8:]), epochs=1, batch_size=8, shuffle=False, verbose=0)
    assert max_diff(state.params, ref.params) == 0.0


def test_padding_repeats_the_first_finite_row_in_every_batcher():
    x, y = nan_in_row_0(5)
    x[1, 0] = np.inf
    arrays = {"x": x, "y": y}
    assert padding_row(arrays) == 2
    last = list(iterate_batches(arrays, 4))[-1]
    assert last["x"][1:].tolist() == [x[2].tolist()] * 3 and last["mask"].tolist() == [1, 0, 0, 0]
    assert np.isfinite(pad_to(arrays, 8)["x"][5:]).all()
    assert epoch_plan(5, 4, None, 0, pad_row=2)["index"][-1].tolist() == [4, 2, 2, 2]
    assert padding_row({"x": np.arange(3)}) == 0  # integers are always finite


# --- per-step sequence losses on slices of the batch ----------------------------------


class Tagger(nn.Module):
    """One output per time step: a per-step loss weighted by the valid steps (x_mask)."""

    @nn.compact
    def __call__(self, x, mask=None, train: bool = False):
        return layers.Dense(3)(layers.SimpleRNN(6, return_sequences=True)(x, mask=mask))


def tagging_data(n=23, t=7):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, t, 2)).astype(np.float32)
    x_mask = np.arange(t)[None] < rng.integers(1, t + 1, n)[:, None]
    y = rng.integers(0, 3, (n, t)).astype(np.int32)
    weight = rng.uniform(0.1, 2, n).astype(np.float32)
    return {"x": x, "y": y, "x_mask": x_mask, "weight": weight}


def new_tagger(data):
    return create_train_state(Tagger(), "adam", data["x"][:1], learning_rate=0.05, seed=2)


@pytest.mark.eight_devices
@pytest.mark.parametrize(
    "kind, devices, accumulate", [("jit", 1, 4), ("jit", 2, 2), ("pmap", 8, 1), ("pmap", 2, 2)]
)
def test_per_step_losses_on_microbatches_and_devices_equal_one_device(kind, devices, accumulate):
    # Each slice scaled its per-step losses by its own rows over its own valid steps:
    # the parameters were 0.13-0.2 away from one device's, the loss 0.02-0.05.
    data = tagging_data()
    ref, ref_history = fit(new_tagger(data), data, epochs=2, batch_size=8, verbose=0)
    engine = parallel.make_engine(devices=devices, engine=kind, accumulate=accumulate)
    state, history = fit(new_tagger(data), data, epochs=2, batch_size=8, verbose=0, engine=engine)
    assert max_diff(ref.params, state.params) < 1e-6
    np.testing.assert_allclose(history["loss"], ref_history["loss"], rtol=1e-6)


@pytest.mark.eight_devices
def test_pmap_evaluate_of_a_per_step_loss_equals_one_device():
    data = tagging_data()
    state = new_tagger(data)
    ref = evaluate(state, data, batch_size=23)
    got = evaluate(
        state, data, batch_size=23, engine=parallel.make_engine(devices=8, engine="pmap")
    )
    assert got["loss"] == pytest.approx(ref["loss"], rel=1e-6)
    assert got["accuracy"] == pytest.approx(ref["accuracy"], rel=1e-6)


# --- buckets ---------------------------------------------------------------------------


def test_buckets_cut_per_step_targets_and_compile_once_per_bucket():
    # Per-step targets y (n, T) were kept whole while x was cut to the bucket's length:
    # "Incompatible shapes for broadcasting: (4, 9, 1), (4, 8, 1)".
    class Tag(nn.Module):
        @nn.compact
        def __call__(self, x, mask=None, train: bool = False):
            return layers.Dense(3)(layers.SimpleRNN(5, return_sequences=True)(x, mask=mask))

    data = tagging_data(n=23, t=9)
    lengths = data["x_mask"].sum(axis=1)
    new = lambda: create_train_state(Tag(), "adam", data["x"][:1], learning_rate=0.05, seed=2)
    compiles = compile_lib.STATS["compiles"]
    state, _ = fit(new(), data, epochs=2, batch_size=4, verbose=0, buckets=[3, 6], seed=1)
    assert compile_lib.STATS["compiles"] - compiles == 3  # buckets 3, 6 and 9
    # Oracle: the same batches at full length (cutting masked steps changes nothing).
    ref, step = new(), jax.jit(train_step)
    for epoch in range(2):
        plan = iterate_bucketed(data, lengths, [3, 6], 4, shuffle_seed=1, epoch=epoch, seq_keys=())
        for batch in plan:
            ref, _ = step(ref, batch)
    assert max_diff(state.params, ref.params) < 1e-6


def test_buckets_keep_one_hot_targets_whose_width_equals_the_length_whole():
    # A per-row model whose one-hot y (n, 5) happens to be as wide as x_mask (n, 5).
    class Last(nn.Module):
        @nn.compact
        def __call__(self, x, mask=None, train: bool = False):
            return layers.Dense(5)(layers.SimpleRNN(4)(x, mask=mask))

    data = tagging_data(n=12, t=5)
    data["y"] = np.eye(5, dtype=np.float32)[np.arange(12) % 5]
    state = create_train_state(
        Last(), "sgd", data["x"][:1], loss="categorical_crossentropy", learning_rate=0.1
    )
    _, history = fit(state, data, epochs=1, batch_size=4, verbose=0, buckets=[2])
    assert np.isfinite(history["loss"][0])


# --- options a mode ignored, and runs with nothing left to do ---------------------------


def small_data(n=20):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    return {"x": x, "y": (x[:, 0] > 0).astype(np.int32), "x_mask": np.ones((n, 5), bool)}


@pytest.mark.parametrize(
    "options, message",
    [
        ({"fuse": "run", "buckets": [2]}, "buckets= runs one compiled step per bucket"),
        ({"fuse": "run", "chunk_steps": 2}, "chunk_steps=2 splits the scan of fuse='epoch'"),
        ({"chunk_steps": 2}, "got fuse=None"),
    ],
)
def test_options_a_mode_would_ignore_are_config_errors(options, message):
    # fuse="run" trained at full length without buckets, and chunk_steps was dropped silently.
    with pytest.raises(ConfigError, match=message):
        fit(sgd_dense_5(), small_data(), epochs=1, batch_size=8, verbose=0, **options)


def sgd_dense_5():
    return create_train_state(nn.Dense(2), "sgd", np.zeros((1, 5), np.float32), learning_rate=0.1)


@pytest.mark.parametrize("fuse", [None, "run"])
def test_a_finished_run_continued_at_its_last_epoch_returns_the_state_unchanged(fuse):
    # fuse="run" raised "ValueError: need at least one array to stack"; the per-step
    # loop returns the state and an empty history.
    state = sgd_dense_5()
    kernel = np.asarray(state.params["kernel"]).copy()
    out, history = fit(state, small_data(), epochs=2, initial_epoch=2, verbose=0, fuse=fuse)
    assert history == {} and int(out.step) == 0
    np.testing.assert_array_equal(np.asarray(out.params["kernel"]), kernel)


# --- populations ----------------------------------------------------------------------


def test_a_population_takes_allow_nonfinite_as_its_error_message_says():
    # fit_population raised "... or pass allow_nonfinite=True ..." but had no such argument.
    x, y = nan_in_row_0()
    with pytest.raises(DataError, match="allow_nonfinite=True"):
        fit_population(lambda seed: sgd_dense(), (x, y), n=2, epochs=1, batch_size=8, verbose=0)
    pop = fit_population(
        lambda seed: sgd_dense(), (x, y), n=2, epochs=1, batch_size=8, shuffle=False, verbose=0,
        allow_nonfinite=True,
    )  # fmt: skip
    ref, _ = fit(sgd_dense(), (x[8:], y[8:]), epochs=1, batch_size=8, shuffle=False, verbose=0)
    assert pop.states.skipped.tolist() == [1, 1]  # the NaN batch only, not the padded one
    for i in range(2):
        assert max_diff(pop.member(i).params, ref.params) < 1e-6


# --- fuse="run" and EarlyStopping -----------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{"patience": 50}, {"patience": 1, "start_from_epoch": 3, "restore_best_weights": True}],
)
def test_fused_run_leaves_early_stopping_in_the_state_the_per_step_loop_does(options):
    # fuse="run" left best_epoch, best and wait at their on_train_begin values (0, inf, 0);
    # the per-step loop's callback had e.g. best_epoch 6, wait 1 (and get_state saves them).
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5)).astype(np.float32), rng.integers(0, 3, 40).astype(np.int32)
    val = (rng.normal(size=(11, 5)).astype(np.float32), rng.integers(0, 3, 11).astype(np.int32))
    states = []
    for fuse in (None, "run"):
        es = EarlyStopping(monitor="val_loss", **options)
        state = create_train_state(nn.Dense(3), "sgd", x[:1], learning_rate=2.0)
        fit(state, (x, y), epochs=10, batch_size=8, validation_data=val, callbacks=[es],
            fuse=fuse, verbose=0)  # fmt: skip
        states.append(es.get_state())
    assert states[0]["best_epoch"] > 0 or states[0]["wait"] > 0  # not the reset state
    assert states[1]["best"] == pytest.approx(states[0]["best"], rel=1e-6)
    for key in ("wait", "stopped_epoch", "best_epoch"):
        assert states[1][key] == states[0][key], key


def test_fused_epoch_continued_mid_epoch_equals_the_per_step_loop_without_a_retrace_warning():
    # Without chunk_steps an epoch is one scan: the shorter first scan of a run continued
    # at initial_step=2 raised "RetraceWarning: fused epoch compiles again because
    # plan['index']: int32[3,8] -> int32[5,8]" (an error where warnings are errors).
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5)).astype(np.float32), rng.integers(0, 3, 40).astype(np.int32)
    out = []
    for fuse in (None, "epoch"):
        state = create_train_state(nn.Dense(3), "adam", x[:1], learning_rate=0.1)
        kwargs = dict(epochs=3, initial_epoch=1, initial_step=2, batch_size=8, verbose=0)
        out.append(fit(state, (x, y), fuse=fuse, **kwargs))
    assert int(out[1][0].step) == 8  # 3 steps left of epoch 1, 5 of epoch 2
    assert max_diff(out[0][0].params, out[1][0].params) == 0.0
    assert out[0][1]["loss"] == out[1][1]["loss"]


def test_fused_run_takes_only_an_early_stopping_for_an_early_stopping():
    # Any callback with patience and monitor was compiled in as an EarlyStopping: a run
    # of 6 epochs with ReduceLROnPlateau(patience=1) stopped after 2, and an
    # EarlyStopping beside it raised "compiles one EarlyStopping into the loop; got several".
    class Watcher(Callback):  # a user's callback that happens to have both attributes
        def __init__(self):
            super().__init__()
            self.monitor, self.patience, self.seen = "val_loss", 1, []

        def on_epoch_end(self, epoch, logs=None):
            self.seen.append(epoch)

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5)).astype(np.float32), rng.integers(0, 3, 40).astype(np.int32)
    val = (rng.normal(size=(11, 5)).astype(np.float32), rng.integers(0, 3, 11).astype(np.int32))
    kwargs = dict(epochs=6, batch_size=8, validation_data=val, verbose=0, fuse="run")
    state = create_train_state(nn.Dense(3), "sgd", x[:1], learning_rate=2.0)
    watcher = Watcher()
    _, history = fit(state, (x, y), callbacks=[watcher], **kwargs)
    assert len(history["loss"]) == 6 and watcher.seen == list(range(6))
    es, watcher = EarlyStopping(monitor="val_loss", patience=2), Watcher()
    state = create_train_state(nn.Dense(3), "sgd", x[:1], learning_rate=2.0)
    _, history = fit(state, (x, y), callbacks=[watcher, es], **kwargs)
    # The per-step rule on these val losses (1.782, 1.824, 1.976): stop after epoch 2.
    assert len(history["loss"]) == 3 and es.stopped_epoch == 2 and watcher.seen == [0, 1, 2]


@pytest.mark.parametrize("name", ["ReduceLROnPlateau", "LearningRateScheduler", "ModelCheckpoint"])
def test_fused_run_refuses_callbacks_that_act_between_epochs(name, tmp_path):
    # Replayed after the one dispatch, ReduceLROnPlateau and LearningRateScheduler trained
    # nothing at a lower rate but left the returned state at 0.0625 / 0.03125 (trained at
    # 2.0); a ModelCheckpoint saved the final weights under every epoch's name.
    from jaxnets import callbacks as callbacks_lib

    make = {
        "ReduceLROnPlateau": lambda: callbacks_lib.ReduceLROnPlateau(monitor="loss", patience=1),
        "LearningRateScheduler": lambda: callbacks_lib.LearningRateScheduler(lambda e, lr: lr),
        "ModelCheckpoint": lambda: callbacks_lib.ModelCheckpoint(str(tmp_path / "ckpt")),
    }[name]
    with pytest.raises(ConfigError, match=f"so {name} cannot act between epochs.*fuse='epoch'"):
        fit(sgd_dense_5(), small_data(), epochs=2, verbose=0, fuse="run", callbacks=[make()])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),  # ZeroDivisionError
        ({"epochs": 0}, "epochs must be a positive integer, got 0"),  # trained nothing, silently
        # Never stopped a member, silently: "acc" is logged as "accuracy"; no validation data.
        ({"patience": 1, "monitor": "acc"}, r"monitors 'acc', which no epoch logs; logged: \["),
        ({"patience": 1, "monitor": "val_loss"}, "monitors 'val_loss', which no epoch logs"),
        # The error advised "Drop fuse=", an argument fit_population does not have.
        ({"engine": "sharded"}, "engine= must be the single-device LocalEngine"),
    ],
)
def test_population_arguments_get_clear_errors_before_training(options, message):
    if options.get("engine") == "sharded":
        options = {"engine": parallel.make_engine(devices=2)}
    x, y = small_data()["x"], small_data()["y"]
    make = lambda seed: create_train_state(nn.Dense(2), "adam", x[:1], seed=seed)
    with pytest.raises(ConfigError, match=message):
        fit_population(make, (x, y), n=2, verbose=0, **{"epochs": 1, **options})


def test_fused_run_compiles_no_slicing_program_for_its_metric_shapes(caplog):
    # fit_run took epoch 0's plan from the device copy, which compiled a dynamic_slice
    # program for every new epoch count before the run.
    x, y = small_data(24)["x"], small_data(24)["y"]
    state = create_train_state(nn.Dense(2), "sgd", x[:1], learning_rate=0.1)
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.DEBUG):
            fit(state, (x, y), epochs=7, batch_size=8, verbose=0, fuse="run")
    finally:
        jax.config.update("jax_log_compiles", False)
    compiled = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert compiled and not [m for m in compiled if "dynamic_slice" in m]


def test_buckets_keep_the_valid_steps_of_front_padded_sequences():
    # Lengths were the count of valid steps: a row padded at the front (valid steps last,
    # Keras's pad_sequences default) was cut to its first steps, all padding.
    class Last(nn.Module):
        @nn.compact
        def __call__(self, x, mask=None, train: bool = False):
            return layers.Dense(3)(layers.SimpleRNN(6)(x, mask=mask))

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8, 2)).astype(np.float32)
    lengths = rng.integers(1, 9, 16)
    x_mask = np.arange(8)[None] >= (8 - lengths)[:, None]  # valid steps at the end
    data = {"x": x, "y": rng.integers(0, 3, 16).astype(np.int32), "x_mask": x_mask}
    assert mask_extents(x_mask).tolist() == [8] * 16
    new = lambda: create_train_state(Last(), "adam", x[:1], learning_rate=0.05, seed=2)
    state, _ = fit(new(), data, epochs=1, batch_size=4, verbose=0, buckets=[3, 6], seed=1)
    # Oracle: the same batches uncut (a front-padded row needs every step).
    ref, step = new(), jax.jit(train_step)
    for batch in iterate_bucketed(data, mask_extents(x_mask), [3, 6], 4, shuffle_seed=1):
        ref, _ = step(ref, batch)
    assert max_diff(state.params, ref.params) < 1e-6


def test_fused_run_ignores_a_replayed_callbacks_state_change_with_a_warning():
    # fuse='run' replays the epochs to callbacks after they ran; a callback that set
    # the state in on_epoch_end used to replace the trained parameters in the result.
    import warnings as _warnings

    class Zero(Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.state = self.model.state.replace(
                params=jax.tree.map(lambda p: p * 0, self.model.state.params)
            )

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)

    def state():
        return create_train_state(nn.Dense(2), "sgd", x[:1], learning_rate=0.1)

    ref, _ = fit(state(), (x, y), epochs=2, batch_size=8, verbose=0, fuse="run")
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        out, _ = fit(state(), (x, y), epochs=2, batch_size=8, verbose=0, fuse="run",
                     callbacks=[Zero()])  # fmt: skip
    assert any("the change is ignored" in str(w.message) for w in caught)
    np.testing.assert_array_equal(out.params["kernel"], ref.params["kernel"])
