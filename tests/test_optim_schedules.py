"""`make_schedule`: each named schedule against its closed form, names in any case, errors."""

import math

import numpy as np
import pytest

from jaxnets.errors import ConfigError, UnknownNameError
from jaxnets.optim import SCHEDULES, get_hyperparam, make_optimizer, make_schedule

LR, TOTAL = 0.4, 100


def values(schedule, steps):
    return [float(schedule(s)) for s in steps]


@pytest.mark.parametrize("name", [None, "constant", "Constant", "CONSTANT"])
def test_constant_is_the_rate_itself(name):
    assert make_schedule(name, LR) == LR  # no total_steps needed


def test_step_multiplies_at_half_and_three_quarters():
    s = make_schedule("step", LR, total_steps=TOTAL)
    np.testing.assert_allclose(values(s, [0, 49, 50, 74, 75, 99]), [0.4, 0.4, 0.04, 0.04, 0.004, 0.004], rtol=1e-6)  # fmt: skip
    s = make_schedule("piecewise", LR, total_steps=TOTAL, boundaries={10: 0.5, 20: 0.5})
    np.testing.assert_allclose(values(s, [9, 10, 20]), [0.4, 0.2, 0.1], rtol=1e-6)


def test_exponential_cosine_warmup_and_one_cycle_closed_forms():
    s = make_schedule("exponential", LR, total_steps=TOTAL, decay_rate=0.1)
    np.testing.assert_allclose(values(s, [0, 50, 100]), [LR * 0.1 ** (t / TOTAL) for t in (0, 50, 100)], rtol=1e-5)  # fmt: skip
    alpha = 0.1
    s = make_schedule("cosine", LR, total_steps=TOTAL, alpha=alpha)
    cosine = [LR * (alpha + (1 - alpha) * 0.5 * (1 + math.cos(math.pi * t / TOTAL))) for t in (0, 25, 100)]  # fmt: skip
    np.testing.assert_allclose(values(s, [0, 25, 100]), cosine, rtol=1e-5)
    s = make_schedule("warmup_cosine", LR, total_steps=TOTAL, warmup_steps=10)
    np.testing.assert_allclose(values(s, [0, 5, 10, 100]), [0.0, LR / 2, LR, 0.0], atol=1e-6)
    s = make_schedule("one_cycle", LR, total_steps=TOTAL)
    v = values(s, range(TOTAL + 1))
    assert max(v) == pytest.approx(LR) and int(np.argmax(v)) == 30  # optax's pct_start 0.3
    assert v[0] < LR / 10 and v[-1] < LR / 100


@pytest.mark.parametrize("name", [n for n in SCHEDULES if n != "constant"])
def test_names_match_in_any_case(name):
    lower = make_schedule(name, LR, total_steps=TOTAL)
    upper = make_schedule(name.upper(), LR, total_steps=TOTAL)
    steps = [0, 7, 33, 60, 99]
    assert values(upper, steps) == values(lower, steps)


def test_errors_name_what_was_expected():
    with pytest.raises(UnknownNameError, match="cosine"):
        make_schedule("cosin", LR, total_steps=TOTAL)
    with pytest.raises(ConfigError, match="total_steps > 0") as info:
        make_schedule("cosine", LR)
    # It says what to pass: fit() does not fill total_steps in for create_train_state.
    assert "total_steps=" in str(info.value) and "fit() passes" not in str(info.value)


def test_make_optimizer_applies_the_schedule():
    tx = make_optimizer("sgd", learning_rate=LR, schedule="Constant")
    assert float(get_hyperparam(tx.init({"w": np.zeros(2, np.float32)}))) == pytest.approx(LR)
