"""The functional core: pure steps, padding and masking, no retrace, the loops."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnets import compile as compile_lib
from jaxnets import losses
from jaxnets.errors import ConfigError, DataError, UnknownNameError
from jaxnets.training import (
    create_train_state,
    default_engine,
    eval_step,
    evaluate,
    fit,
    predict,
    train_step,
)
from jaxnets.training.inference import eval_and_accumulate
from jaxnets.training.step import all_finite, loss_and_updates


class TinyNet(nn.Module):
    """Dense-BatchNorm-Dropout-Dense: exercises every kind of state the step carries."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        # No bias before BatchNorm: its gradient is ~0, and Adam would turn float noise in it
        # into full-size steps, which makes jit-vs-eager comparisons meaningless.
        x = nn.Dense(8, use_bias=False)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.Dropout(0.1, deterministic=not train)(nn.relu(x))
        return nn.Dense(3)(x)


def _data(n=37, d=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, 3, size=n).astype(np.int32)
    return x, y


def _state(x, **kw):
    kw.setdefault("learning_rate", 0.05)
    return create_train_state(TinyNet(), "adam", x[:1], seed=0, **kw)


def _batch(x, y, mask=None):
    mask = np.ones(len(x), np.float32) if mask is None else mask
    return {"x": jnp.asarray(x), "y": jnp.asarray(y), "mask": jnp.asarray(mask)}


def test_jitted_step_equals_unjitted_step():
    x, y = _data()
    s0 = _state(x)
    a, ma = train_step(s0, _batch(x, y))
    b, mb = jax.jit(train_step)(s0, _batch(x, y))
    a, b = (s.replace(rng=jax.random.key_data(s.rng)) for s in (a, b))
    for u, v in zip(jax.tree.leaves((a, ma)), jax.tree.leaves((b, mb)), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


def test_padded_batch_gives_the_unpadded_numbers():
    # Without dropout or BatchNorm a padded row must change nothing at all.
    x, y = _data(n=11)
    state = create_train_state(nn.Dense(3), "sgd", x[:1], learning_rate=0.1)
    xp = np.concatenate([x, np.full((5, 5), 7.0, np.float32)])
    yp = np.concatenate([y, np.full(5, 2, np.int32)])
    mask = np.concatenate([np.ones(11), np.zeros(5)]).astype(np.float32)
    a, ma = train_step(state, _batch(x, y))
    b, mb = train_step(state, _batch(xp, yp, mask))
    np.testing.assert_allclose(a.params["kernel"], b.params["kernel"], atol=1e-7)
    np.testing.assert_allclose(ma["loss"]["total"], mb["loss"]["total"], rtol=1e-6)
    assert float(mb["loss"]["count"]) == 11.0


def test_sgd_step_matches_closed_form_gradient():
    # Softmax regression: dL/dW = x^T (softmax(xW + b) - onehot(y)) / n.
    x, y = _data(n=9)
    state = create_train_state(nn.Dense(3), "sgd", x[:1], learning_rate=0.5)
    w, b = np.asarray(state.params["kernel"]), np.asarray(state.params["bias"])
    logits = x @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad_w = x.T @ (p - np.eye(3)[y]) / len(x)
    new, _ = train_step(state, _batch(x, y))
    np.testing.assert_allclose(new.params["kernel"], w - 0.5 * grad_w, atol=1e-5)


def test_batchnorm_statistics_and_dropout_key_advance():
    x, y = _data()
    s0 = _state(x)
    s1, _ = train_step(s0, _batch(x, y))
    before = s0.model_state["batch_stats"]
    after = s1.model_state["batch_stats"]
    assert not np.allclose(before["BatchNorm_0"]["mean"], after["BatchNorm_0"]["mean"])
    assert int(s1.step) == 1
    assert not np.array_equal(
        jax.random.key_data(s0.step_key()), jax.random.key_data(s1.step_key())
    )


def test_nonfinite_batch_skips_the_update_bitwise():
    x, y = _data()
    s0 = _state(x)
    bad = x.copy()
    bad[3, 2] = np.nan
    s1, _ = train_step(s0, _batch(bad, y))
    for u, v in zip(jax.tree.leaves(s0.params), jax.tree.leaves(s1.params), strict=True):
        np.testing.assert_array_equal(u, v)
    for u, v in zip(jax.tree.leaves(s0.opt_state), jax.tree.leaves(s1.opt_state), strict=True):
        np.testing.assert_array_equal(u, v)
    assert int(s1.skipped) == 1


class SqrtOffset(nn.Module):
    """Dense plus sqrt(p), p = 0: a finite loss whose gradient for p is infinite."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        p = self.param("p", nn.initializers.zeros, (3,))
        return nn.Dense(3)(x) + jnp.sqrt(p)


def test_an_infinite_gradient_with_a_finite_loss_skips_the_update_bitwise():
    x, y = _data()
    s0 = create_train_state(SqrtOffset(), "adam", x[:1], learning_rate=0.1)
    s1, sums = train_step(s0, _batch(x, y))
    assert np.isfinite(float(sums["loss"]["total"]))
    assert not np.all(
        np.isfinite(
            jax.grad(lambda p: loss_and_updates(p, s0, _batch(x, y), s0.rng)[0])(s0.params)["p"]
        )
    )
    assert _bits(s1.params) == _bits(s0.params) and _bits(s1.opt_state) == _bits(s0.opt_state)
    assert int(s1.skipped) == 1


@pytest.mark.parametrize("seed", range(6))
def test_all_finite_agrees_with_numpy(seed):
    rng = np.random.default_rng(seed)
    tree = {
        "kernel": rng.normal(size=(7, 5)).astype(np.float32) * 1e38,  # sums overflow; values finite
        "bias": rng.normal(size=(5,)).astype(np.float32),
        "conv": rng.normal(size=(3, 3, 2, 4)).astype(np.float32),
        "half": rng.normal(size=(4, 6)).astype(jnp.bfloat16),
        "scalar": np.float32(rng.normal()),
    }
    if seed:  # seed 0 stays finite; the others get one inf or NaN in some leaf
        name = sorted(tree)[seed % len(tree)]
        leaf = np.array(tree[name])
        leaf.reshape(-1)[rng.integers(leaf.size)] = [np.inf, -np.inf, np.nan][seed % 3]
        tree[name] = leaf
    expected = all(np.all(np.isfinite(np.asarray(v, np.float32))) for v in tree.values())
    assert bool(all_finite(jax.tree.map(jnp.asarray, tree), jnp.float32(2.5))) == expected
    assert expected == (seed == 0)
    assert not bool(all_finite(jax.tree.map(jnp.asarray, tree), jnp.float32(np.nan)))


def test_all_finite_sees_a_nan_in_the_imaginary_part():
    c = jnp.ones((2, 3), jnp.complex64)
    assert bool(all_finite({"c": c}, jnp.float32(1.0)))
    assert not bool(all_finite({"c": c.at[0, 1].set(complex(0.0, np.nan))}, jnp.float32(1.0)))
    assert not bool(all_finite({"v": c[0].at[2].set(complex(0.0, np.inf))}, jnp.float32(1.0)))


def test_all_finite_under_vmap_checks_each_member():
    trees = {"w": jnp.ones((3, 4, 2)).at[1, 2, 0].set(jnp.inf), "b": jnp.ones((3, 2))}
    got = jax.vmap(all_finite)(trees, jnp.ones(3))
    assert got.tolist() == [True, False, True]


def _bits(tree):
    return [np.asarray(v).tobytes() for v in jax.tree.leaves(tree)]


def test_fit_traces_each_step_once_including_the_partial_batch():
    x, y = _data(n=37)  # 37 rows in batches of 8: the last batch is padded.
    engine = default_engine()
    eval_fn = engine.compile(eval_and_accumulate)
    state = _state(x)
    # fit compiles its step ahead of time (jaxnets.compile.GuardedStep) and reuses it.
    before = (compile_lib.STATS["compiles"], eval_fn._cache_size())
    state, history = fit(state, (x, y), epochs=3, batch_size=8, validation_data=(x, y), verbose=0)
    state, history = fit(state, (x, y), epochs=2, batch_size=8, validation_data=(x, y), verbose=0)
    after = (compile_lib.STATS["compiles"], eval_fn._cache_size())
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
    assert len(history["loss"]) == 2 and "val_accuracy" in history


def test_evaluate_equals_a_single_unpadded_batch():
    x, y = _data(n=37)
    state = _state(x)
    whole = jax.jit(eval_step)(state, _batch(x, y))
    logs = evaluate(state, (x, y), batch_size=8)
    np.testing.assert_allclose(logs["loss"], whole["loss"]["total"] / 37, rtol=1e-5)
    np.testing.assert_allclose(logs["accuracy"], whole["accuracy"]["correct"] / 37, rtol=1e-6)
    out = predict(state, x, batch_size=8)
    assert out.shape == (37, 3)
    np.testing.assert_allclose(out, state.apply_fn(state.variables, x), atol=1e-5)


def test_fit_learns_and_history_is_data():
    x, y = _data(n=120, seed=3)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1).astype(np.int32)
    state = _state(x, learning_rate=0.02)
    state, history = fit(state, (x, y), epochs=15, batch_size=16, verbose=0, seed=1)
    assert history["loss"][-1] < 0.6 * history["loss"][0]
    assert all(isinstance(v, float) for v in history["accuracy"])


def test_the_same_seed_gives_bitwise_the_same_run():
    x, y = _data(n=40)
    a, _ = fit(_state(x), (x, y), epochs=2, batch_size=8, verbose=0, seed=5)
    b, _ = fit(_state(x), (x, y), epochs=2, batch_size=8, verbose=0, seed=5)
    for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(u, v)


def test_continuing_from_a_saved_position_equals_the_whole_run():
    x, y = _data(n=40)  # 5 batches of 8 per epoch.
    whole, _ = fit(_state(x), (x, y), epochs=2, batch_size=8, verbose=0, seed=5)

    class StopAfter3:
        def __init__(self):
            self.model, self.n = None, 0

        def set_model(self, m):
            self.model = m

        def set_params(self, p):
            pass

        def __getattr__(self, name):  # every other hook is a no-op
            return lambda *a, **k: None

    # Train 1 epoch + 3 batches by hand, then continue from (epoch 1, batch 3).
    part, _ = fit(_state(x), (x, y), epochs=1, batch_size=8, verbose=0, seed=5)
    from jaxnets.data.batching import iterate_batches

    step = jax.jit(train_step)
    for i, b in enumerate(iterate_batches({"x": x, "y": y}, 8, shuffle_seed=5, epoch=1)):
        if i == 3:
            break
        part, _ = step(part, b)
    part, _ = fit(
        part, (x, y), epochs=2, batch_size=8, verbose=0, seed=5, initial_epoch=1, initial_step=3
    )
    for u, v in zip(jax.tree.leaves(whole.params), jax.tree.leaves(part.params), strict=True):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize(
    "name", ["sgd", "momentum", "nesterov", "adam", "adamw", "nadam", "rmsprop", "adagrad", "lion"]
)
def test_every_optimizer_reduces_the_loss(name):
    x, y = _data(n=64)
    state = create_train_state(nn.Dense(3), name, x[:1], learning_rate=0.05)
    step = jax.jit(train_step)
    first = None
    for _ in range(30):
        state, sums = step(state, _batch(x, y))
        first = first if first is not None else float(sums["loss"]["total"])
    assert float(sums["loss"]["total"]) < first


def test_learning_rate_changes_without_retrace():
    from jaxnets.optim import get_hyperparam, set_hyperparam

    x, y = _data()
    state = create_train_state(nn.Dense(3), "sgd", x[:1], learning_rate=0.1)
    step = jax.jit(lambda s, b: train_step(s, b))  # a fresh function: its own trace cache
    state, _ = step(state, _batch(x, y))
    state = state.replace(opt_state=set_hyperparam(state.opt_state, "learning_rate", 0.0))
    frozen, _ = step(state, _batch(x, y))
    assert step._cache_size() == 1
    assert float(get_hyperparam(frozen.opt_state)) == 0.0
    np.testing.assert_array_equal(frozen.params["kernel"], state.params["kernel"])


def test_l2_penalty_adds_to_the_loss():
    x, y = _data()
    plain = create_train_state(nn.Dense(3), "sgd", x[:1], learning_rate=0.1)
    reg = create_train_state(nn.Dense(3), "sgd", x[:1], learning_rate=0.1, l2=0.01)
    a = eval_step(plain, _batch(x, y))["loss"]["total"] / len(x)
    b = eval_step(reg, _batch(x, y))["loss"]["total"] / len(x)
    np.testing.assert_allclose(b - a, 0.01 * np.sum(np.square(plain.params["kernel"])), rtol=1e-4)


def test_losses_match_closed_forms():
    logits = jnp.array([[2.0, -1.0, 0.5]])
    p = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(
        losses.get("sparse_categorical_crossentropy")(logits, jnp.array([2])),
        -np.log(p[0, 2]),
        rtol=1e-6,
    )
    probs_loss = losses.get("categorical_crossentropy", from_logits=False)
    np.testing.assert_allclose(
        probs_loss(jnp.asarray(p), jnp.array([[0.0, 1, 0]])), -np.log(p[0, 1]), rtol=1e-5
    )
    smooth = losses.get("categorical_crossentropy", label_smoothing=0.3)(
        logits, jnp.array([[0.0, 1, 0]])
    )
    target = np.array([0.1, 0.8, 0.1])
    np.testing.assert_allclose(smooth, -(target * np.log(p[0])).sum(), rtol=1e-5)
    z, t = jnp.array([0.3, -2.0]), jnp.array([1.0, 0.0])
    want = -(t * np.log(1 / (1 + np.exp(-z))) + (1 - t) * np.log(1 - 1 / (1 + np.exp(-z))))
    np.testing.assert_allclose(losses.get("binary_crossentropy")(z, t), want, rtol=1e-5)
    np.testing.assert_allclose(
        losses.get("huber")(jnp.array([[0.5], [3.0]]), jnp.zeros((2, 1))), [0.125, 2.5]
    )
    np.testing.assert_allclose(
        losses.get("mae")(jnp.array([[1.0, -3.0]]), jnp.zeros((1, 2))), [2.0]
    )


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: losses.get("crossentropy"), r"unknown loss .*Valid losses: .*sparse_categorical"),
        (
            lambda: create_train_state(nn.Dense(2), "adma", jnp.zeros((1, 2))),
            r"did you mean 'adam'",
        ),
    ],
)
def test_unknown_names_list_the_valid_ones(call, match):
    with pytest.raises(UnknownNameError, match=match):
        call()


def test_bad_arguments_get_clear_errors():
    x, y = _data()
    with pytest.raises(ConfigError, match="learning_rate must be a number >= 0"):
        create_train_state(nn.Dense(3), "adam", x[:1], learning_rate=-1.0)
    state = create_train_state(nn.Dense(3), "adam", x[:1])
    with pytest.raises(ConfigError, match="epochs must be a positive integer, got 0"):
        fit(state, (x, y), epochs=0, verbose=0)
    with pytest.raises(DataError, match="same number of rows"):
        fit(state, (x, y[:-1]), verbose=0)
    with pytest.raises(DataError, match="empty"):
        fit(state, (x[:0], y[:0]), verbose=0)


def test_optax_transform_is_accepted():
    x, y = _data()
    state = create_train_state(nn.Dense(3), optax.sgd(0.1), x[:1])
    state, history = fit(state, (x, y), epochs=1, batch_size=64, verbose=0)
    assert int(state.step) == 1


def test_learning_rate_is_found_inside_per_group_optimizers():
    from jaxnets.optim import get_hyperparam, make_optimizer, set_hyperparam

    tx = optax.partition(
        {"train": make_optimizer("adam", 1e-3), "frozen": optax.set_to_zero()},
        {"w": "train", "v": "frozen"},
    )
    opt_state = tx.init({"w": jnp.zeros(2), "v": jnp.zeros(2)})
    assert float(get_hyperparam(opt_state)) == pytest.approx(1e-3)
    assert float(get_hyperparam(set_hyperparam(opt_state, "learning_rate", 0.5))) == 0.5


def test_predict_returns_every_output_of_a_multi_output_model():
    import optax

    class TwoHeads(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            h = nn.relu(nn.Dense(8)(x))
            return nn.Dense(2)(h), nn.Dense(1)(h)[:, 0]

    def loss(out, t):
        ce = optax.softmax_cross_entropy_with_integer_labels(out[0], t[:, 0].astype(jnp.int32))
        return ce + (out[1] - t[:, 1]) ** 2

    x = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    t = np.stack([x[:, 0] > 0, x[:, 1]], 1).astype(np.float32)
    state = create_train_state(TwoHeads(), "adam", x[:1], loss=loss, metrics=())
    state, _ = fit(state, (x, t), epochs=1, batch_size=32, verbose=0)
    logits, value = predict(state, x, batch_size=64)  # 64 + 36 padded to 64
    ref = state.apply_fn(state.variables, x)
    assert logits.shape == (100, 2) and value.shape == (100,)
    np.testing.assert_allclose(logits, ref[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value, ref[1], rtol=1e-5, atol=1e-6)


def test_a_dict_of_inputs_gets_a_clear_error_in_the_loops():
    x = np.zeros((8, 2), np.float32)
    state = create_train_state(nn.Dense(2), "sgd", x[:1])
    for call in (
        lambda: fit(state, ({"a": x, "b": x}, np.zeros(8, np.int32)), verbose=0),
        lambda: evaluate(state, ({"a": x}, np.zeros(8, np.int32))),
        lambda: predict(state, {"a": x}),
    ):
        with pytest.raises(DataError, match="dict of arrays"):
            call()


def test_a_masked_sequence_loss_weighs_every_valid_step_alike():
    """Per-step targets with x_mask: the loss is the mean over all valid steps (Keras's masked
    loss, PyTorch's ignore_index), not the mean of per-row means; also over padded batches."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 6, 3)).astype(np.float32)
    y = rng.integers(0, 4, size=(5, 6)).astype(np.int32)
    lengths = np.array([6, 1, 3, 2, 5])
    x_mask = np.arange(6)[None, :] < lengths[:, None]
    state = create_train_state(nn.Dense(4), "sgd", x[:1], loss="sparse_categorical_crossentropy")
    logits = np.asarray(state.apply_fn(state.variables, x))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, y[..., None], -1)[..., 0]
    for batch_size in (5, 2):  # one batch; three with a padded last one (each batch its own mean)
        got = evaluate(state, {"x": x, "y": y, "x_mask": x_mask}, batch_size=batch_size)["loss"]
        means, rows = [], []
        for start in range(0, 5, batch_size):
            sl = slice(start, start + batch_size)
            means.append(nll[sl][x_mask[sl]].mean())
            rows.append(len(nll[sl]))
        assert got == pytest.approx(np.average(means, weights=rows), rel=1e-5)
