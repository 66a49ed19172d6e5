"""Fused training (`jaxnets.training.fused`) against the per-step loop and a hand loop."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from jaxnets import compile as compile_lib
from jaxnets import layers
from jaxnets.callbacks.early_stopping import EarlyStopping
from jaxnets.data.batching import iterate_batches
from jaxnets.errors import ConfigError
from jaxnets.training import create_train_state, fit, fused, train_step

TRACES = {"n": 0}


class Net(nn.Module):
    """Dense-BatchNorm-Dropout-Dense: exercises batch_stats and the dropout keys."""

    width: int = 8
    bn: bool = True
    dropout: float = 0.25

    @nn.compact
    def __call__(self, x, train: bool = False):
        TRACES["n"] += 1  # counts traces, not calls
        x = layers.Dense(self.width, activation="relu")(x)
        if self.bn:
            x = layers.BatchNormalization()(x, train=train)
        if self.dropout:
            x = layers.Dropout(self.dropout)(x, train=train)
        return layers.Dense(3)(x)


def make_data(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32) + (x[:, 2] > 1).astype(np.int32)
    return x, y


def new_state(module=None, lr=0.05):
    module = module or Net()
    return create_train_state(module, "adam", np.zeros((1, 5), np.float32), learning_rate=lr)


def assert_close(a, b, atol=1e-6):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=atol, rtol=0)


@pytest.mark.parametrize("n", [64, 50])  # 50: the last batch is padded and masked
@pytest.mark.parametrize("chunk_steps", [None, 2])
def test_fused_epoch_equals_per_step_fit(n, chunk_steps):
    data = make_data(n)
    a, ha = fit(new_state(), data, epochs=3, batch_size=16, verbose=0, seed=3)
    b, hb = fit(
        new_state(), data, epochs=3, batch_size=16, verbose=0, seed=3, fuse="epoch",
        chunk_steps=chunk_steps,
    )  # fmt: skip
    assert_close(a.params, b.params)
    assert_close(a.model_state, b.model_state)  # BatchNorm statistics
    assert int(a.step) == int(b.step) == 3 * -(-n // 16)
    np.testing.assert_allclose(ha["loss"], hb["loss"], rtol=1e-6)
    assert ha["accuracy"] == hb["accuracy"]


def test_per_step_fit_equals_a_hand_loop_over_iterate_batches():
    x, y = make_data(50)
    state, _ = fit(new_state(), (x, y), epochs=2, batch_size=16, verbose=0, seed=1)
    ref = new_state()
    step = jax.jit(train_step)
    for epoch in range(2):
        for batch in iterate_batches({"x": x, "y": y}, 16, shuffle_seed=1, epoch=epoch):
            ref, _ = step(ref, batch)
    assert_close(state.params, ref.params)


def test_fused_run_stops_at_the_epoch_of_per_step_early_stopping():
    x, y = make_data(64)
    val = (x, (y + 1) % 3)  # labels the model unlearns: the validation loss rises

    def run(fuse):
        es = EarlyStopping(monitor="val_loss", patience=2)
        state, hist = fit(
            new_state(lr=0.1), (x, y), epochs=12, batch_size=16, validation_data=val,
            callbacks=[es], verbose=0, fuse=fuse,
        )  # fmt: skip
        return state, hist, es.stopped_epoch

    a, ha, stop_a = run(None)
    b, hb, stop_b = run("run")
    assert 0 < stop_a < 11
    assert stop_a == stop_b and len(ha["loss"]) == len(hb["loss"]) == stop_a + 1
    np.testing.assert_allclose(ha["val_loss"], hb["val_loss"], rtol=1e-5)
    assert_close(a.params, b.params)


def test_fused_run_restores_best_weights_like_the_callback():
    x, y = make_data(64)  # the shapes of the test above: its programs are reused
    val = (x, (y + 1) % 3)
    out = []
    for fuse in (None, "run"):
        es = EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
        kwargs = dict(epochs=6, batch_size=16, validation_data=val, callbacks=[es], verbose=0)
        out.append(fit(new_state(lr=0.1), (x, y), fuse=fuse, **kwargs)[0])
    assert_close(out[0].params, out[1].params)


def test_fused_epoch_traces_and_compiles_once_whatever_the_epoch_count():
    data = make_data(40)
    counts = []
    for width, epochs in ((6, 1), (7, 4)):  # new widths: nothing is reused from other tests
        state = new_state(Net(width=width))
        traces, compiles = TRACES["n"], compile_lib.STATS["compiles"]
        fit(state, data, epochs=epochs, batch_size=16, verbose=0, fuse="epoch")
        counts.append(TRACES["n"] - traces)
        assert compile_lib.STATS["compiles"] - compiles == 1
    assert counts[0] == counts[1]


def test_fused_run_prints_the_preflight_report_and_one_line_per_epoch(capsys):
    x, y = make_data(32)
    fit(new_state(Net(bn=False)), (x, y), epochs=2, batch_size=16, verbose=2, fuse="run")
    out = capsys.readouterr().out
    assert "pre-flight" in out and "FLOP per step" in out and "fused run" in out
    assert "Epoch 2/2" in out


def test_bad_fuse_options_raise_config_errors():
    data = make_data(16)
    with pytest.raises(ConfigError, match="fuse must be"):
        fit(new_state(), data, fuse="step", verbose=0)
    with pytest.raises(ConfigError, match="chunk_steps"):
        fit(new_state(), data, fuse="epoch", chunk_steps=0, verbose=0)
    with pytest.raises(ConfigError, match="monitor"):
        es = EarlyStopping(monitor="val_accuracy")
        fit(new_state(), data, validation_data=data, fuse="run", callbacks=[es], verbose=0)


def test_epoch_plan_matches_iterate_batches():
    x = np.arange(11)
    plan = fused.epoch_plan(11, 4, 7, 2)
    batches = list(iterate_batches({"x": x}, 4, shuffle_seed=7, epoch=2))
    assert plan["index"].tolist() == [b["x"].tolist() for b in batches]
    assert plan["valid"].tolist() == [b["mask"].tolist() for b in batches]


def test_sample_weights_and_a_row_mask_gather_like_iterate_batches():
    x, y = make_data(37)
    w = np.linspace(0.5, 2.0, 37).astype(np.float32)
    arrays = {"x": x, "y": y, "weight": w, "mask": (np.arange(37) % 5 != 0).astype(np.float32)}
    plan = fused.epoch_plan(37, 8, 4, 1)
    batches = list(iterate_batches(arrays, 8, shuffle_seed=4, epoch=1))
    for row, expected in enumerate(batches):
        got = fused.gather_batch(arrays, plan["index"][row], plan["valid"][row])
        for key in expected:
            np.testing.assert_array_equal(np.asarray(got[key]), expected[key])
    a, _ = fit(new_state(Net(bn=False)), (x, y, w), epochs=2, batch_size=8, verbose=0)
    b, _ = fit(new_state(Net(bn=False)), (x, y, w), epochs=2, batch_size=8, verbose=0, fuse="epoch")
    assert_close(a.params, b.params)
