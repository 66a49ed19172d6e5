"""BatchNormalization and LayerNormalization against hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets.layers import BatchNormalization, LayerNormalization


def test_batchnorm_train_eval_and_running_stats(rng):
    x = rng.normal(2.0, 3.0, size=(16, 5, 4)).astype(np.float32)
    bn = BatchNormalization()
    variables = bn.init(jax.random.key(0), jnp.asarray(x))
    assert variables["batch_stats"]["mean"].shape == (4,)
    y, updates = bn.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
    mean, var = x.mean((0, 1)), x.var((0, 1))  # biased variance, as Keras
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-3), rtol=1e-4, atol=1e-4)
    stats = updates["batch_stats"]
    np.testing.assert_allclose(stats["mean"], 0.99 * 0.0 + 0.01 * mean, rtol=1e-5)
    np.testing.assert_allclose(stats["var"], 0.99 * 1.0 + 0.01 * var, rtol=1e-5)
    # Eval mode normalizes with the running statistics and updates nothing.
    params = {"params": variables["params"], "batch_stats": stats}
    y_eval = bn.apply(params, jnp.asarray(x))
    np.testing.assert_allclose(
        y_eval, (x - stats["mean"]) / np.sqrt(stats["var"] + 1e-3), rtol=1e-4, atol=1e-4
    )


def test_batchnorm_scale_bias_and_axis(rng):
    x = rng.normal(size=(8, 3, 6)).astype(np.float32)
    bn = BatchNormalization(axis=1, center=False)
    variables = bn.init(jax.random.key(0), jnp.asarray(x))
    assert set(variables["params"]) == {"scale"}
    params = {**variables, "params": {"scale": jnp.array([1.0, 2.0, 3.0])}}
    y, _ = bn.apply(params, jnp.asarray(x), train=True, mutable=["batch_stats"])
    mean, var = x.mean((0, 2), keepdims=True), x.var((0, 2), keepdims=True)
    want = (x - mean) / np.sqrt(var + 1e-3) * np.array([1.0, 2.0, 3.0])[None, :, None]
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


def test_batchnorm_axis_name_syncs_statistics(rng):
    # Four shards under a named vmap axis must normalize like one big batch.
    x = jnp.asarray(rng.normal(1.0, 2.0, size=(4, 6, 3)), jnp.float32)
    bn = BatchNormalization(axis_name="data")
    variables = bn.init(jax.random.key(0), x[0])
    run = lambda v, xs: bn.apply(v, xs, train=True, mutable=["batch_stats"])
    y_sharded, upd = jax.vmap(run, in_axes=(None, 0), axis_name="data")(variables, x)
    full = BatchNormalization()
    y_full, upd_full = full.apply(variables, x.reshape(24, 3), train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(y_sharded.reshape(24, 3), y_full, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        upd["batch_stats"]["mean"][0], upd_full["batch_stats"]["mean"], rtol=1e-5
    )


def test_layernorm_hand_computed(rng):
    x = rng.normal(size=(3, 5)).astype(np.float32)
    ln = LayerNormalization()
    y = ln.apply(ln.init(jax.random.key(0), jnp.asarray(x)), jnp.asarray(x))
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-3), rtol=1e-4, atol=1e-5)


@pytest.mark.eight_devices
def test_batchnorm_syncs_under_pmap(rng):
    # conftest gives 8 fake CPU devices; two replicas must agree with one batch.
    n = 2
    assert jax.local_device_count() >= n
    x = jnp.asarray(rng.normal(size=(n, 5, 3)), jnp.float32)
    bn = BatchNormalization(axis_name="batch")
    variables = bn.init(jax.random.key(0), x[0])
    step = jax.pmap(
        lambda v, xs: bn.apply(v, xs, train=True, mutable=["batch_stats"]),
        axis_name="batch",
        in_axes=(None, 0),
    )
    y, upd = step(variables, x)
    y_full, upd_full = BatchNormalization().apply(
        variables, x.reshape(10, 3), train=True, mutable=["batch_stats"]
    )
    np.testing.assert_allclose(np.asarray(y).reshape(10, 3), y_full, rtol=1e-5, atol=1e-5)
    for replica in range(n):
        np.testing.assert_allclose(
            upd["batch_stats"]["var"][replica], upd_full["batch_stats"]["var"], rtol=1e-5
        )


def _naive_standardize(x, axes, epsilon):
    mean = x.mean(axis=axes, keepdims=True)
    return (x - mean) / jnp.sqrt(jnp.square(x - mean).mean(axis=axes, keepdims=True) + epsilon)


def test_layernorm_hand_written_gradient_equals_autodiff_and_finite_differences(rng):
    from jax.test_util import check_grads

    from jaxnets.layers.normalization import standardize

    x = jnp.asarray(rng.normal(size=(3, 4, 5)) * 3 + 1, jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 4, 5)), jnp.float32)
    for axes in ((2,), (1, 2)):
        got = jax.grad(lambda x, a=axes: (standardize(x, a, 1e-3) * w).sum())(x)
        want = jax.grad(lambda x, a=axes: (_naive_standardize(x, a, 1e-3) * w).sum())(x)
        np.testing.assert_allclose(got, want, atol=1e-5)
        with jax.enable_x64(True):
            check_grads(
                lambda x, a=axes: standardize(x, a, 1e-3),
                (np.asarray(x, np.float64),),
                order=1,
                modes=["rev"],
            )
    # The layer's parameter gradients too.
    ln = LayerNormalization()
    v = ln.init(jax.random.key(0), x)
    got = jax.grad(lambda v: (ln.apply(v, x) * w).sum())(v)["params"]
    y = _naive_standardize(x, (2,), 1e-3)
    np.testing.assert_allclose(got["scale"], (w * y).sum(axis=(0, 1)), atol=1e-4)
    np.testing.assert_allclose(got["bias"], w.sum(axis=(0, 1)), atol=1e-5)
