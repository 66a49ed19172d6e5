"""Regression tests for fixes in the core: mode keyword names, seeds, label ranges,
custom loss shapes and the log-loss clip."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets.errors import ConfigError, DataError
from jaxnets.metrics import LogLoss
from jaxnets.training import create_train_state, fit, predict, train_step
from jaxnets.training import state as state_lib


def _body(x, train):
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Dense(16)(x)))
    return nn.Dense(2)(nn.Dropout(0.5, deterministic=not train)(x))


class WithTrain(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        return _body(x, train)


class WithTraining(nn.Module):
    @nn.compact
    def __call__(self, x, training: bool = False):
        return _body(x, training)


class WithDeterministic(nn.Module):
    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        return _body(x, not deterministic)


class DeterministicRequired(nn.Module):
    """``deterministic`` without a default: init and predict must pass it too."""

    @nn.compact
    def __call__(self, x, deterministic: bool):
        return _body(x, not deterministic)


def _xy(n=128):
    x = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32)


def test_accepted_call_kwargs_names_the_mode_argument_the_module_takes():
    assert state_lib.accepted_call_kwargs(WithTrain()) == ("train",)
    assert state_lib.accepted_call_kwargs(WithTraining()) == ("training",)
    assert state_lib.accepted_call_kwargs(WithDeterministic()) == ("deterministic",)
    assert state_lib.accepted_call_kwargs(nn.Dense(2)) == ()
    assert state_lib.mode_kwargs(("training",), True) == {"training": True}
    assert state_lib.mode_kwargs(("deterministic", "mask"), True) == {"deterministic": False}
    assert state_lib.mode_kwargs(("deterministic",), False) == {"deterministic": True}
    assert state_lib.mode_kwargs((), True) == {}


@pytest.mark.parametrize("module", [WithTraining(), WithDeterministic(), DeterministicRequired()])
def test_training_and_deterministic_modules_train_like_the_train_version(module):
    x, y = _xy()
    ref = create_train_state(WithTrain(), "adam", x[:1], seed=3)
    st = create_train_state(module, "adam", x[:1], seed=3)
    before = jax.device_get(st.model_state)
    ref, _ = fit(ref, (x, y), epochs=1, batch_size=32, verbose=0, seed=1)
    st, _ = fit(st, (x, y), epochs=1, batch_size=32, verbose=0, seed=1)
    # BatchNorm statistics moved (training mode), exactly as in the train= version.
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), before, st.model_state)
    assert all(v > 0 for v in jax.tree.leaves(moved))
    for a, b in zip(
        jax.tree.leaves((ref.params, ref.model_state)),
        jax.tree.leaves((st.params, st.model_state)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Inference mode in predict: dropout off, running statistics, same outputs.
    np.testing.assert_array_equal(predict(st, x, batch_size=32), predict(ref, x, batch_size=32))


@pytest.mark.parametrize(
    "seed",
    [np.int64(7), np.arange(10)[7], np.int32(7), np.uint8(7), np.asarray(7), jnp.asarray(7)],
    ids=["np.int64", "arange", "np.int32", "np.uint8", "0-d numpy", "0-d jax"],
)
def test_integer_scalar_seeds_equal_the_python_int(seed):
    x = np.zeros((1, 3), np.float32)
    want = create_train_state(nn.Dense(2), "sgd", x, seed=7)
    got = create_train_state(nn.Dense(2), "sgd", x, seed=seed)
    for a, b in zip(jax.tree.leaves(want.params), jax.tree.leaves(got.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(jax.random.key_data(want.rng), jax.random.key_data(got.rng))


def test_prng_keys_still_work_as_seeds():
    x = np.zeros((1, 3), np.float32)
    want = create_train_state(nn.Dense(2), "sgd", x, seed=7)
    for key in (jax.random.key(7), jax.random.PRNGKey(7)):
        got = create_train_state(nn.Dense(2), "sgd", x, seed=key)
        np.testing.assert_array_equal(
            np.asarray(got.params["kernel"]), np.asarray(want.params["kernel"])
        )


@pytest.mark.parametrize("label", [2**32 + 1, 2**31, -(2**32) + 1])
def test_int64_labels_outside_int32_are_refused_not_wrapped(label):
    x, y = _xy(16)
    y = y.astype(np.int64)
    y[5] = label  # as int32 these would wrap to 1, -2**31 and 1
    st = create_train_state(nn.Dense(2), "sgd", x[:1])
    with pytest.raises(
        DataError,
        match=rf"1 of 16 rows of y have labels outside \[0, 2\) \(first: row 5, label {label}\)",
    ):
        fit(st, (x, y), epochs=1, verbose=0)


def test_whole_float_labels_outside_int32_are_refused():
    x, y = _xy(16)
    y = y.astype(np.float64)
    y[3] = 2.0**32 + 1
    st = create_train_state(nn.Dense(2), "sgd", x[:1])
    with pytest.raises(DataError, match=r"first: row 3, label 4294967297"):
        fit(st, (x, y), epochs=1, verbose=0)


def test_token_ids_outside_int32_are_refused_not_wrapped():
    class Tokens(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(nn.Embed(10, 4)(x).mean(axis=1))

    st = create_train_state(Tokens(), "sgd", np.zeros((1, 3), np.int32))
    x = np.ones((4, 3), np.int64)
    x[2, 1] = 2**32 + 1  # would wrap to token 1
    with pytest.raises(DataError, match=r"x has values outside the int32 range.*row 2.*4294967297"):
        predict(st, x)
    for bad in (np.uint64(2**63), np.float64(-(2.0**40))):
        x = np.ones((4, 3), type(bad))
        x[1, 0] = bad
        with pytest.raises(DataError, match=r"int32 range.*row 1"):
            predict(st, x)


def _scalar_mse(outputs, targets):
    return jnp.mean((outputs[:, 0] - targets) ** 2)  # the batch mean, not one per example


def _per_class_mse(outputs, targets):
    return jnp.mean((outputs - targets[:, None]) ** 2, axis=0)  # (outputs,): axis 0 reduced


def test_a_custom_loss_returning_a_scalar_is_a_config_error():
    x, y = _xy(32)
    y = y.astype(np.float32)
    st = create_train_state(nn.Dense(1), "sgd", x[:1], loss=_scalar_mse, metrics=())
    msg = r"loss _scalar_mse must return one value per example.*\(batch,\).*got shape \(\)"
    with pytest.raises(ConfigError, match=msg):
        fit(st, (x, y), epochs=1, verbose=0)
    batch = {"x": x[:8], "y": y[:8], "mask": np.ones(8, np.float32)}
    with pytest.raises(ConfigError, match=msg):
        train_step(st, batch)


def test_a_custom_loss_reducing_the_batch_axis_is_a_config_error():
    x, y = _xy(32)
    y = y.astype(np.float32)
    st = create_train_state(nn.Dense(3), "sgd", x[:1], loss=_per_class_mse, metrics=())
    with pytest.raises(ConfigError, match=r"batch of 8 rows.*got shape \(3,\)"):
        fit(st, (x, y), epochs=1, batch_size=8, verbose=0)


def test_a_per_example_custom_loss_still_trains():
    x, y = _xy(32)
    y = y.astype(np.float32)
    per_example = lambda out, t: (out[:, 0] - t) ** 2  # noqa: E731
    st = create_train_state(nn.Dense(1), "sgd", x[:1], loss=per_example, metrics=())
    st, _ = fit(st, (x, y), epochs=1, batch_size=8, verbose=0)
    assert int(st.step) == 4


def test_log_loss_clips_like_sklearn_for_float32():
    from sklearn.metrics import log_loss

    preds = np.array(
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0], [0.7, 0.3, 0.0]],
        np.float32,
    )
    labels = np.array([1, 1, 2, 0, 2])  # rows 0, 3 and 4 give the true class probability 0
    want = log_loss(labels, preds, labels=[0, 1, 2])
    m = LogLoss()
    got = float(m.compute(m.update(jnp.asarray(preds), jnp.asarray(labels), jnp.ones(5))))
    assert got == pytest.approx(want, rel=1e-6)
