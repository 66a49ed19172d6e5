"""Fault matrix, numerical faults: NaN batches, mixed-precision overflow, failing data."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets import precision
from jaxnets.training import LocalEngine, create_train_state, fit, fused, train_step
from jaxnets.training.step import loss_and_updates


class TinyNet(nn.Module):
    """Dense-BatchNorm-Dropout-Dense: params, model state and an RNG all in the step."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(8, use_bias=False)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.Dropout(0.1, deterministic=not train)(nn.relu(x))
        return nn.Dense(3)(x)


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(nn.relu(nn.Dense(16)(x)))


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1).astype(np.int32)


def _batch(x, y):
    return {"x": jnp.asarray(x), "y": jnp.asarray(y), "mask": jnp.ones(len(x), jnp.float32)}


def _equations(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jax.core.subjaxprs(eqn) if hasattr(jax.core, "subjaxprs") else ():
            yield from _equations(sub)
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", None)
            if inner is not None and hasattr(inner, "eqns"):
                yield from _equations(inner)


def _bits(tree):
    return [np.asarray(leaf).tobytes() for leaf in jax.tree.leaves(tree)]


def test_nan_batch_leaves_the_state_bitwise_unchanged_and_counts_it():
    x, y = _data(8)
    state = create_train_state(TinyNet(), "adam", x[:1], learning_rate=0.1)
    step = jax.jit(train_step)
    state, _ = step(state, _batch(x, y))  # a real step first: non-trivial adam moments
    bad = x.copy()
    bad[3, 2] = np.nan
    after, sums = step(state, _batch(bad, y))
    for part in ("params", "opt_state", "model_state"):
        assert _bits(getattr(after, part)) == _bits(getattr(state, part)), part
    assert int(after.skipped) == int(state.skipped) + 1 and int(after.step) == int(state.step) + 1
    assert np.isnan(sums["loss"]["total"])  # the batch's loss is reported, not hidden
    good, _ = step(after, _batch(x, y))
    assert int(good.skipped) == 1 and _bits(good.params) != _bits(after.params)


def test_the_guard_needs_no_host_sync():
    x, y = _data(8)
    state = create_train_state(TinyNet(), "adam", x[:1], learning_rate=0.1)
    step = jax.jit(train_step)
    good, bad = _batch(x, y), _batch(np.full_like(x, np.nan), y)
    step(state, good)  # compile outside the guard
    with jax.transfer_guard("disallow"):  # any implicit device<->host copy raises
        for batch in (good, bad, bad, good):
            state, _ = step(state, batch)
    assert int(state.skipped) == 2


class CountingEngine(LocalEngine):
    def __init__(self):
        super().__init__()
        self.fetches = 0

    def fetch(self, tree):
        self.fetches += 1
        return super().fetch(tree)


def test_fit_reports_skipped_updates_per_epoch_fetching_only_at_epoch_end():
    x, y = _data(32)
    x[5] = np.nan  # one bad batch in every epoch
    state = create_train_state(TinyNet(), "adam", x[:1], learning_rate=0.05)
    engine = CountingEngine()
    # No implicit device-to-host copy (a sync) anywhere; explicit fetches are counted.
    with jax.transfer_guard_device_to_host("disallow"):
        state, history = fit(
            state, (x, y), epochs=3, batch_size=8, verbose=0, allow_nonfinite=True, engine=engine
        )
    assert history["skipped"] == [1, 1, 1] and int(state.skipped) == 3
    assert engine.fetches == 1 + 3  # the starting count, then once per epoch
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state.params))


def test_bfloat16_trains_an_mlp_with_float32_params_and_loss():
    x, y = _data(64)
    state = create_train_state(MLP(), "adam", x[:1], learning_rate=0.05, precision="bfloat16")
    # The model's products, forward and backward, run in bfloat16 (the step's
    # finiteness check multiplies the float32 gradients by a zero vector: not model work).
    loss = lambda p: loss_and_updates(p, state, _batch(x, y), state.step_key())[0]  # noqa: E731
    jaxpr = jax.make_jaxpr(jax.grad(loss))(state.params).jaxpr
    dots = [e for e in _equations(jaxpr) if e.primitive.name == "dot_general"]
    assert len(dots) == 5 and all(v.aval.dtype == jnp.bfloat16 for e in dots for v in e.invars)
    _, sums = train_step(state, _batch(x, y))
    assert sums["loss"]["total"].dtype == jnp.float32
    state, history = fit(state, (x, y), epochs=30, batch_size=16, verbose=0)
    assert history["loss"][-1] < 0.5 * history["loss"][0] and history["accuracy"][-1] > 0.85
    leaves = jax.tree.leaves((state.params, state.opt_state))
    assert all(leaf.dtype in (jnp.float32, jnp.int32) for leaf in leaves)
    assert state.loss_scale is None  # bfloat16 needs no loss scaling


def test_float16_overflow_skips_the_update_and_halves_the_scale():
    x, y = _data(8)
    state = create_train_state(nn.Dense(3), "sgd", x[:1], learning_rate=0.1, precision="fp16")
    assert isinstance(state.loss_scale, precision.DynamicScale)
    assert float(state.loss_scale.scale) == 2.0**15
    # Inject the overflow: a scale of 2**40 makes every float16 gradient infinite.
    state = state.replace(loss_scale=precision.DynamicScale.create(initial=2.0**40, period=2))
    step = jax.jit(train_step)
    after, sums = step(state, _batch(x, y))
    assert np.isfinite(sums["loss"]["total"])  # the loss itself was fine
    assert _bits(after.params) == _bits(state.params) and int(after.skipped) == 1
    assert float(after.loss_scale.scale) == 2.0**39
    # Halving continues until float16 holds the gradients, then updates resume.
    for _ in range(30):
        after, _ = step(after, _batch(x, y))
    assert int(after.skipped) < 31 and float(after.loss_scale.scale) < 2.0**39
    assert after.params["kernel"].dtype == jnp.float32
    assert _bits(after.params) != _bits(state.params)


def test_loss_scale_grows_after_period_good_steps():
    x, y = _data(8)
    state = create_train_state(nn.Dense(3), "sgd", x[:1], learning_rate=0.1, precision="float16")
    state = state.replace(loss_scale=precision.DynamicScale.create(initial=4.0, period=3))
    step = jax.jit(train_step)
    scales = []
    for _ in range(7):
        state, _ = step(state, _batch(x, y))
        scales.append(float(state.loss_scale.scale))
    assert scales == [4.0, 4.0, 8.0, 8.0, 8.0, 16.0, 16.0] and int(state.skipped) == 0


def test_float16_unscaled_gradients_match_float32_closely():
    # The scale must cancel: one float16 SGD step ~ one float32 step.
    x, y = _data(8)
    f32 = create_train_state(nn.Dense(3), "sgd", x[:1], learning_rate=0.1)
    f16 = create_train_state(nn.Dense(3), "sgd", x[:1], learning_rate=0.1, precision="float16")
    a, _ = jax.jit(train_step)(f32, _batch(x, y))
    b, _ = jax.jit(train_step)(f16, _batch(x, y))
    np.testing.assert_allclose(a.params["kernel"], b.params["kernel"], atol=2e-3)


class Boom(Exception):
    """A data-pipeline failure of a type jaxnets knows nothing about."""


class Holder:
    state = None
    stop_training = False


def _feed_cut_after(monkeypatch, units: int, error: Exception | None):
    """Makes fit's data feed stop (or raise ``error``) after ``units`` steps of epoch 0."""
    real = fused.Feed.epoch

    def epoch(self, epoch, start=0):
        for k, unit in enumerate(real(self, epoch, start)):
            if k == units:
                if error is not None:
                    raise error
                return
            yield unit

    monkeypatch.setattr(fused.Feed, "epoch", epoch)


def test_data_that_raises_mid_epoch_propagates_and_keeps_the_last_completed_state(
    monkeypatch,
):
    x, y = _data(40)
    state = create_train_state(TinyNet(), "adam", x[:1], learning_rate=0.05)
    fresh = lambda: jax.tree.map(jnp.copy, state)  # fit donates its input
    # Oracle: the same run with an epoch that simply ends after three steps.
    _feed_cut_after(monkeypatch, 3, None)
    expected, _ = fit(fresh(), (x, y), epochs=1, batch_size=8, verbose=0)
    monkeypatch.undo()
    _feed_cut_after(monkeypatch, 3, Boom("disk went away"))
    holder = Holder()
    with pytest.raises(Boom, match="disk went away"):
        fit(fresh(), (x, y), epochs=2, batch_size=8, verbose=0, callback_model=holder)
    assert int(holder.state.step) == 3
    assert _bits(holder.state.params) == _bits(expected.params)
    assert _bits(holder.state.opt_state) == _bits(expected.opt_state)
    assert _bits(holder.state.model_state) == _bits(expected.model_state)


def test_host_batches_that_raise_keep_the_last_completed_state(monkeypatch):
    # The host-fed path (multi-device engines, data too big for the device).
    x, y = _data(40)
    real = fused.iterate_batches

    def failing(*args, **kwargs):
        for i, batch in enumerate(real(*args, **kwargs)):
            if i == 2:
                raise Boom("reader died")
            yield batch

    monkeypatch.setattr(fused, "can_keep_on_device", lambda *a, **k: False)
    monkeypatch.setattr(fused, "iterate_batches", failing)
    holder = Holder()
    state = create_train_state(TinyNet(), "adam", x[:1], learning_rate=0.05)
    with pytest.raises(Boom, match="reader died"):
        fit(state, (x, y), epochs=1, batch_size=8, verbose=0, callback_model=holder)
    assert int(holder.state.step) == 2
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(holder.state.params))


def test_callback_that_raises_keeps_the_epoch_end_state():
    from jaxnets.callbacks import Callback

    class Fail(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyError("callback bug")

    x, y = _data(16)
    holder = Holder()
    state = create_train_state(TinyNet(), "adam", x[:1], learning_rate=0.05)
    with pytest.raises(KeyError, match="callback bug"):
        fit(state, (x, y), epochs=3, batch_size=8, verbose=0, callbacks=[Fail()], callback_model=holder)  # fmt: skip
    assert int(holder.state.step) == 4  # two whole epochs of two steps
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(holder.state.params))
