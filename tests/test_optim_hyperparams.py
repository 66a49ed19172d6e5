"""Injected hyperparameters: a scheduled learning rate is set through its peak; numeric types."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnets.callbacks import ReduceLROnPlateau
from jaxnets.errors import ConfigError
from jaxnets.optim import SCHEDULES, get_hyperparam, make_optimizer, make_schedule, set_hyperparam
from jaxnets.training import create_train_state
from jaxnets.training.loop import FitContext

TOTAL = 20
PARAMS = {"w": jnp.zeros(2)}
ONES = {"w": jnp.ones(2)}


def sgd_rates(tx, opt_state, steps=TOTAL + 2):
    """The rate of each step: plain SGD's update of a unit gradient is minus the rate."""
    rates = []
    for _ in range(steps):
        updates, opt_state = tx.update(ONES, opt_state, PARAMS)
        rates.append(-float(updates["w"][0]))
    return rates


def cosine(peak, t):
    return peak * 0.5 * (1 + math.cos(math.pi * min(t, TOTAL) / TOTAL))


def test_setting_the_rate_of_a_scheduled_optimizer_sets_the_schedule_peak():
    tx = make_optimizer("sgd", learning_rate=0.1, schedule="cosine", total_steps=TOTAL)
    opt_state = set_hyperparam(tx.init(PARAMS), "learning_rate", 0.5)
    rates = sgd_rates(tx, opt_state)
    np.testing.assert_allclose(rates, [cosine(0.5, t) for t in range(TOTAL + 2)], atol=1e-7)
    # The same as an optimizer built with that peak, step for step.
    built = make_optimizer("sgd", learning_rate=0.5, schedule="cosine", total_steps=TOTAL)
    assert rates == sgd_rates(built, built.init(PARAMS))


def test_setting_the_peak_mid_schedule_rescales_the_steps_that_follow():
    tx = make_optimizer("sgd", learning_rate=0.4, schedule="cosine", total_steps=TOTAL)
    opt_state = tx.init(PARAMS)
    for _ in range(5):
        _, opt_state = tx.update(ONES, opt_state, PARAMS)
    opt_state = set_hyperparam(opt_state, "learning_rate", 0.2)  # halve the peak at step 5
    assert float(get_hyperparam(opt_state)) == pytest.approx(0.2)
    rates = sgd_rates(tx, opt_state, steps=5)
    np.testing.assert_allclose(rates, [cosine(0.2, t) for t in range(5, 10)], atol=1e-7)
    # The schedule's factor of the last step (step 4) is visible, and cannot be set: the
    # next step would overwrite it.
    scale = float(get_hyperparam(opt_state, "learning_rate_scale"))
    assert scale == pytest.approx(cosine(1.0, 4), abs=1e-7)
    with pytest.raises(ConfigError, match="computed by a schedule"):
        set_hyperparam(opt_state, "learning_rate_scale", 1.0)


@pytest.mark.parametrize("name", [n for n in SCHEDULES if n != "constant"])
def test_the_default_peak_trains_as_the_schedule_did(name):
    # Before: the schedule itself injected as the learning rate. Now: peak x unit schedule.
    # Both compute the same formula; they differ by float32 rounding only (<= 2 ulps of
    # the peak), and not at all for the cosine and exponential schedules.
    lr = 0.01
    old = optax.inject_hyperparams(
        lambda learning_rate, weight_decay: optax.chain(
            optax.add_decayed_weights(weight_decay), optax.scale_by_learning_rate(learning_rate)
        )
    )(learning_rate=make_schedule(name, lr, total_steps=TOTAL), weight_decay=0.0)
    new = make_optimizer("sgd", learning_rate=lr, schedule=name, total_steps=TOTAL)
    a, b = sgd_rates(old, old.init(PARAMS)), sgd_rates(new, new.init(PARAMS))
    if name in ("cosine", "exponential"):
        assert a == b
    np.testing.assert_allclose(a, b, rtol=0, atol=2 * np.finfo(np.float32).eps * lr)
    assert float(get_hyperparam(new.init(PARAMS))) == pytest.approx(lr)  # the peak


def test_unscheduled_optimizers_keep_their_state_layout():
    for kw in ({}, {"schedule": "constant"}):
        opt_state = make_optimizer("adam", learning_rate=0.01, **kw).init(PARAMS)
        assert sorted(opt_state.hyperparams) == ["learning_rate", "weight_decay"]
        assert opt_state.hyperparams_states == {}


def test_reduce_lr_on_plateau_halves_the_peak_of_a_schedule():
    state = create_train_state(nn.Dense(2), "sgd", jnp.zeros((1, 3)), learning_rate=1.0,
                               schedule="cosine", total_steps=TOTAL)  # fmt: skip
    ctx = FitContext(state)
    cb = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=0.0)
    cb.set_model(ctx)
    cb.on_train_begin()
    for epoch in range(2):
        cb.on_epoch_end(epoch, {"loss": 1.0})
    assert float(get_hyperparam(ctx.state.opt_state)) == 0.5
    grads = jax.tree.map(jnp.ones_like, ctx.state.params)
    updates, _ = ctx.state.tx.update(grads, ctx.state.opt_state, ctx.state.params)
    np.testing.assert_allclose(updates["bias"], [-0.5, -0.5])  # step 0: the (halved) peak


def test_a_schedule_function_as_the_rate_cannot_be_set():
    tx = make_optimizer("sgd", learning_rate=optax.linear_schedule(1.0, 0.0, 10))
    with pytest.raises(ConfigError, match="computed by a schedule"):
        set_hyperparam(tx.init(PARAMS), "learning_rate", 0.5)
    with pytest.raises(ConfigError, match="number learning_rate"):
        make_optimizer("sgd", learning_rate=optax.linear_schedule(1.0, 0.0, 10),
                       schedule="cosine", total_steps=10)  # fmt: skip


@pytest.mark.parametrize(
    "value", [np.float32(1e-3), np.float64(1e-3), np.array(1e-3, np.float32), jnp.array(1e-3)]
)
def test_numpy_and_0d_array_rates_are_injected(value):
    tx = make_optimizer("sgd", learning_rate=value, weight_decay=np.float32(0.0))
    opt_state = tx.init(PARAMS)
    assert get_hyperparam(opt_state) == np.float32(1e-3)
    assert sgd_rates(tx, set_hyperparam(opt_state, "learning_rate", 0.5), steps=1) == [0.5]


@pytest.mark.parametrize(
    "value", [np.array([1e-3]), np.float32(np.nan), np.float32(-1e-3), jnp.array(-1.0), "0.1"]
)
def test_rates_that_are_not_positive_numbers_are_rejected(value):
    with pytest.raises(ConfigError, match="learning_rate must be a number >= 0"):
        make_optimizer("sgd", learning_rate=value)
