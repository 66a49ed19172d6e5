"""`create_train_state` reuses the init program of an equal module and optimizer."""

from collections import OrderedDict

import flax.linen as nn
import jax
import numpy as np
import pytest

from jaxnets.optim_state import get_hyperparam
from jaxnets.training import create_train_state
from jaxnets.training import state as state_lib

X = np.zeros((1, 3), np.float32)


class Counted(nn.Module):
    """A Dense layer that counts how often Flax traces it."""

    features: int = 4
    traces = [0]  # class level: every instance adds to it

    @nn.compact
    def __call__(self, x, train: bool = False):
        Counted.traces[0] += 1
        return nn.Dense(self.features)(x)


@pytest.fixture(autouse=True)
def empty_program_cache(monkeypatch):
    monkeypatch.setattr(state_lib, "_INIT_PROGRAMS", OrderedDict())


def _leaves(state):
    leaves = jax.tree.leaves((state.params, state.opt_state, jax.random.key_data(state.rng)))
    return [np.asarray(a) for a in leaves]


def test_equal_modules_trace_once_and_keep_their_own_seeds(monkeypatch):
    Counted.traces[0] = 0
    states = [create_train_state(Counted(), "adam", X, seed=s) for s in (0, 1, 2)]
    assert Counted.traces[0] == 1
    kernels = [np.asarray(s.params["Dense_0"]["kernel"]) for s in states]
    assert not np.array_equal(kernels[0], kernels[1])
    assert not np.array_equal(kernels[1], kernels[2])
    # Bitwise what a first, untraced build of seed 1 gives.
    monkeypatch.setattr(state_lib, "_INIT_PROGRAMS", OrderedDict())
    fresh = create_train_state(Counted(), "adam", X, seed=1)
    assert Counted.traces[0] == 2
    for a, b in zip(_leaves(states[1]), _leaves(fresh), strict=True):
        np.testing.assert_array_equal(a, b)


def test_different_initializers_and_optimizer_options_do_not_share():
    zeros = create_train_state(nn.Dense(2, kernel_init=nn.initializers.zeros), "sgd", X)
    ones = create_train_state(nn.Dense(2, kernel_init=nn.initializers.ones), "sgd", X)
    assert np.all(np.asarray(zeros.params["kernel"]) == 0)
    assert np.all(np.asarray(ones.params["kernel"]) == 1)
    slow = create_train_state(nn.Dense(2), "adam", X, learning_rate=0.01)
    fast = create_train_state(nn.Dense(2), "adam", X, learning_rate=0.5)
    assert float(get_hyperparam(slow.opt_state, "learning_rate")) == pytest.approx(0.01)
    assert float(get_hyperparam(fast.opt_state, "learning_rate")) == pytest.approx(0.5)
    assert len(state_lib._INIT_PROGRAMS) == 4


class WithArray(nn.Module):
    scale: np.ndarray  # numpy arrays are unhashable: no reuse, but no error either

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(2)(x) * self.scale


def test_an_unhashable_module_field_initializes_without_reuse():
    state = create_train_state(WithArray(np.ones(2, np.float32)), "sgd", X)
    assert state.params["Dense_0"]["kernel"].shape == (3, 2)
    assert len(state_lib._INIT_PROGRAMS) == 0


def test_the_program_cache_is_bounded():
    for units in range(state_lib._INIT_PROGRAMS_LIMIT + 3):
        create_train_state(nn.Dense(units + 1), "sgd", X)
    assert len(state_lib._INIT_PROGRAMS) == state_lib._INIT_PROGRAMS_LIMIT
