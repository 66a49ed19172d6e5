"""Fault matrix, bad inputs: each bad call fails before tracing with a clear jaxnets error."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets import data, errors, models, validation
from jaxnets.errors import ConfigError, DataError, DTypeError, ShapeError
from jaxnets.layers import Dropout, activations
from jaxnets.models import mlp
from jaxnets.training import create_train_state, evaluate, fit, predict, train_step

TRACES = []  # appended to each time Net is traced


class Net(nn.Module):
    """Two named Dense layers, so shape errors can name the layer."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        TRACES.append(x.shape)
        return nn.Dense(3, name="logits")(nn.relu(nn.Dense(8, name="hidden")(x)))


class Tokens(nn.Module):
    """Token ids (B, T) -> logits; any T works (mean over time)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(3)(nn.Embed(10, 4)(x).mean(axis=1))


@functools.cache
def _template(loss="sparse_categorical_crossentropy", out=3):
    module = Net() if out == 3 else nn.Dense(out)
    return create_train_state(module, "sgd", jnp.zeros((1, 4)), loss=loss, learning_rate=0.1)


def _state(**kw):
    # fit donates the state's buffers: give each test its own copy.
    return jax.tree.map(jnp.copy, _template(**kw))


def _data(n=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 3, n).astype(np.int32)


def _fit(state, data, **kw):
    kw = {"epochs": 1, "batch_size": 4, "verbose": 0, **kw}
    return fit(state, data, **kw)


def test_errors_subclass_the_builtins():
    assert issubclass(ShapeError, ValueError) and issubclass(DataError, ValueError)
    assert issubclass(DTypeError, TypeError) and issubclass(ConfigError, ValueError)
    assert issubclass(errors.UnknownNameError, KeyError)


def test_state_records_the_sample_input_spec():
    spec = _template().input_spec
    assert spec == validation.InputSpec(shape=(4,), dtype="float32", output_shape=(3,))


def test_wrong_feature_count_names_layer_expected_and_received():
    x, y = _data()
    with pytest.raises(ShapeError, match=r"\(5,\).*\(4,\) \(float32\).*'/hidden'") as info:
        _fit(_state(), (np.zeros((10, 5), np.float32), y))
    assert "Reshape x to (n, 4)" in str(info.value)
    with pytest.raises(ShapeError, match=r"per-example shape \(\)"):
        predict(_state(), x[:, 0])  # rank 1 instead of 2


def test_a_single_example_without_batch_axis_is_named():
    with pytest.raises(ShapeError, match=r"add the batch axis: x\[None\]"):
        predict(_state(), np.zeros(4, np.float32))


def test_label_errors_are_raised_before_any_trace():
    x, y = _data()
    state = _state()
    TRACES.clear()
    with pytest.raises(DataError):
        _fit(state, (x, y + 5))
    assert TRACES == []


def test_other_lengths_are_accepted_when_the_model_runs_on_them():
    state = create_train_state(Tokens(), "sgd", jnp.zeros((1, 5), jnp.int32), learning_rate=0.1)
    x = np.random.default_rng(0).integers(0, 10, (6, 7))  # T=7, created with T=5
    state, history = _fit(state, (x, np.zeros(6, np.int32)))
    assert history["skipped"] == [0]


def test_strings_and_objects_as_features():
    x, y = _data()
    with pytest.raises(DTypeError, match=r"x has dtype <U.*takes float32 inputs"):
        _fit(_state(), (x.astype(str), y))
    with pytest.raises(DTypeError, match="x has dtype object"):
        _fit(_state(), (x.astype(object), y))


def test_integer_features_are_cast_to_the_model_dtype():
    x, y = _data()
    out = validation.check_inputs(_template(), {"x": (x * 10).astype(np.int64), "y": y})
    assert out["x"].dtype == np.float32


def test_token_ids_accept_whole_floats_only():
    state = create_train_state(Tokens(), "sgd", jnp.zeros((1, 5), jnp.int32))
    ok = validation.check_inputs(state, {"x": np.ones((2, 5)), "y": np.zeros(2, int)})
    assert ok["x"].dtype == np.int32
    with pytest.raises(DTypeError, match=r"x must hold integer inputs.*row 1"):
        validation.check_inputs(state, {"x": np.array([[1.0] * 5, [1.5] * 5]), "y": [0, 0]})


def test_sparse_labels_dtype_rules():
    x, y = _data()
    checked = validation.check_inputs(_template(), {"x": x, "y": y.astype(np.float64)})
    assert checked["y"].dtype == np.int32 and (checked["y"] == y).all()
    with pytest.raises(DTypeError, match=r"fractional values in 1 rows \(first: row 2"):
        _fit(_state(), (x, np.where(np.arange(10) == 2, 0.5, y)))
    with pytest.raises(DTypeError, match=r"return_inverse"):
        _fit(_state(), (x, np.array(list("abcabcabca"))))


def test_labels_out_of_range_say_how_many_and_where():
    x, y = _data()
    y = y.copy()
    y[[3, 7]] = 3
    with pytest.raises(DataError, match=r"2 of 10 rows .* \[0, 3\) \(first: row 3, label 3\)"):
        _fit(_state(), (x, y))
    y[3] = -1
    with pytest.raises(DataError, match=r"first: row 3, label -1.*silently clamp"):
        evaluate(_state(), (x, y))


def test_one_hot_targets_with_a_sparse_loss():
    x, y = _data()
    with pytest.raises(DataError, match="loss='categorical_crossentropy'.*argmax"):
        _fit(_state(), (x, np.eye(3, dtype=np.float32)[y]))


def test_integer_labels_with_categorical_crossentropy():
    x, y = _data()
    state = _state(loss="categorical_crossentropy")
    with pytest.raises(DataError, match="loss='sparse_categorical_crossentropy'"):
        _fit(state, (x, y))
    _fit(state, (x, np.eye(3, dtype=np.float32)[y]))  # one-hot works


def test_column_labels_are_accepted_for_sparse_loss():
    x, y = _data()
    assert validation.check_inputs(_template(), {"x": x, "y": y[:, None]})["y"].shape == (10,)


def test_binary_and_regression_targets():
    x, y = _data()
    state = _state(loss="binary_crossentropy", out=1)
    with pytest.raises(DataError, match=r"targets in \[0, 1\].*sparse_categorical"):
        _fit(state, (x, y))  # classes 0..2
    with pytest.raises(ShapeError, match="same size"):
        _fit(_state(loss="mse", out=1), (x, np.zeros((10, 2), np.float32)))
    # Keras losses kept in jaxnets.losses_keras follow the same shape rules.
    for loss in ("hinge", "log_cosh", "mean_absolute_percentage_error"):
        with pytest.raises(ShapeError, match="same size"):
            _fit(_state(loss=loss, out=1), (x, np.zeros((10, 2), np.float32)))


def test_x_and_y_of_different_lengths():
    x, y = _data()
    with pytest.raises(DataError, match="x has 10, y has 9 rows"):
        _fit(_state(), (x, y[:9]))


def test_empty_dataset_and_scalar_and_ragged_inputs():
    x, y = _data()
    with pytest.raises(DataError, match="empty"):
        _fit(_state(), (x[:0], y[:0]))
    with pytest.raises(ShapeError, match="scalar"):
        predict(_state(), 3.0)
    with pytest.raises(DataError, match="same shape"):
        predict(_state(), [[1.0, 2.0], [1.0]])


def test_batch_larger_than_the_dataset_pads_and_matches_one_full_step():
    x, y = _data(n=10)
    expected, _ = jax.jit(train_step)(_state(), {"x": x, "y": y, "mask": np.ones(10, np.float32)})
    state, history = _fit(_state(), (x, y), batch_size=64, shuffle=False)
    assert int(state.step) == 1 and history["skipped"] == [0]
    got, want = state.params["logits"]["kernel"], expected.params["logits"]["kernel"]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_nonfinite_inputs_name_count_and_first_row():
    x, y = _data()
    x[[4, 6], 1] = np.nan
    x[8, 0] = np.inf
    with pytest.raises(DataError, match=r"x has NaN or Inf in 3 of 10 rows \(first: row 4\)"):
        _fit(_state(), (x, y))
    with pytest.raises(DataError, match="allow_nonfinite=True"):
        predict(_state(), x)
    state, history = _fit(_state(), (x, y), batch_size=2, allow_nonfinite=True, shuffle=False)
    # Rows 4, 6 and 8 fall in batches 2, 3 and 4: three updates skipped, none applied.
    assert history["skipped"] == [3] and int(state.skipped) == 3
    assert np.isnan(predict(state, x, allow_nonfinite=True)[4]).all()


def test_nonfinite_targets_and_bad_weights():
    x, y = _data()
    with pytest.raises(DataError, match=r"y has NaN or Inf in 1 of 10 rows \(first: row 0\)"):
        _fit(_state(loss="mse", out=1), (x, np.r_[np.nan, np.zeros(9)].astype(np.float32)))
    with pytest.raises(DataError, match="weight has NaN"):
        _fit(_state(), (x, y, np.r_[np.nan, np.ones(9)]))
    with pytest.raises(DataError, match="1 are negative"):
        _fit(_state(), (x, y, np.r_[-1.0, np.ones(9)]))


def test_bad_validation_data_fails_before_training():
    x, y = _data()
    state = _state()
    with pytest.raises(DataError, match="labels outside"):
        _fit(state, (x, y), validation_data=(x, y + 3))
    assert int(state.step) == 0  # nothing ran: the state was not even donated


@pytest.mark.parametrize(
    "call, suggestion",
    [
        (lambda: create_train_state(Net(), "adma", jnp.zeros((1, 4))), "'adam'"),
        (lambda: create_train_state(Net(), "sgd", jnp.zeros((1, 4)), loss="mse_"), "'mse'"),
        (
            lambda: create_train_state(Net(), "sgd", jnp.zeros((1, 4)), metrics=["acuracy"]),
            "'accuracy'",
        ),  # fmt: skip
        (
            lambda: create_train_state(Net(), "sgd", jnp.zeros((1, 4)), precision="bfloat61"),
            "'bfloat16'",
        ),  # fmt: skip
        (lambda: activations.get("rleu"), "'relu'"),
        (lambda: models.get("resnet19"), "'resnet18'"),
        (lambda: data.load("digts"), "'digits'"),
    ],
    ids=["optimizer", "loss", "metric", "precision", "activation", "model", "dataset"],
)
def test_unknown_names_suggest_the_closest(call, suggestion):
    with pytest.raises(errors.UnknownNameError, match=f"did you mean {suggestion}"):
        call()


def test_invalid_hyperparameters():
    x, y = _data()
    with pytest.raises(ConfigError, match="learning_rate must be a number >= 0, got -0.1"):
        create_train_state(Net(), "sgd", jnp.zeros((1, 4)), learning_rate=-0.1)
    with pytest.raises(ConfigError, match="epochs must be a positive integer, got 0"):
        _fit(_state(), (x, y), epochs=0)
    for call in (_fit, evaluate, predict):
        with pytest.raises(ConfigError, match="batch_size must be a positive integer, got 0"):
            call(_state(), (x, y) if call is not predict else x, batch_size=0)
    for rate in (1.0, -0.1):
        with pytest.raises(ConfigError, match=r"MLP.dropout_rate must be in \[0, 1\)"):
            create_train_state(mlp.MLP(dropout_rate=rate), "sgd", jnp.zeros((1, 4)))
    with pytest.raises(ConfigError, match=r"Dropout rate must be in \[0, 1\)"):
        Dropout(1.5)


def test_the_keras_facade_gets_the_same_checks():
    from jaxnets.keras import Sequential
    from jaxnets.layers import Dense

    x, y = _data()
    model = Sequential([Dense(3, input_shape=(4,))])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(DataError, match=r"labels outside \[0, 3\)"):
        model.fit(x, y + 3, epochs=1, verbose=0)
    with pytest.raises(ShapeError, match=r"per-example shape \(5,\)"):
        model.predict(np.zeros((2, 5), np.float32), verbose=0)


def test_multi_label_binary_outputs_count_every_label():
    x, _ = _data()
    y = (x[:, :2] > 0).astype(np.float32)  # two labels per example
    state, history = _fit(_state(loss="binary_crossentropy", out=2), (x, y))
    assert np.isfinite(history["loss"][0])
    logits = np.asarray(state.apply_fn({"params": state.params}, x))
    want = ((logits > 0) == (y > 0.5)).mean()  # every label counts, as in Keras
    np.testing.assert_allclose(evaluate(state, (x, y))["accuracy"], want, rtol=1e-6)
