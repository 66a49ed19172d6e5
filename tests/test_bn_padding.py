"""BatchNormalization ignores the padding rows of a last partial batch (the row mask).

The last batch of an epoch is padded to the full batch size with copies of a
real row; training-mode BatchNorm must take its statistics over the real rows
only, in every engine, so that the numbers are those of the unpadded batch (as
Keras, which does not pad).
"""

import contextlib
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnets
from jaxnets.layers import BatchNormalization, replicas
from jaxnets.parallel import PmapEngine, ShardedEngine, make_engine
from jaxnets.training import LocalEngine, create_train_state, fit, step, train_step

TOL = 1e-6
EPS = 1e-3
# conftest gives 8 fake CPU devices; the engines below use the first 4.
FOUR_DEVICES = pytest.mark.skipif(
    jax.device_count() < 4, reason="needs 4 devices; JAX_PLATFORMS=cpu gives 8"
)


class ConvBN(nn.Module):
    """Conv-BatchNorm-ReLU, pooled, Dense (the convolution's bias would be BatchNorm's)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3), use_bias=False)(x)
        x = BatchNormalization(momentum=0.5)(x, train=train)
        return nn.Dense(3)(nn.relu(x).mean(axis=(1, 2)))


def conv_data(n=21, seed=0):
    rng = np.random.default_rng(seed)
    # Row 0 (the padding row) far from the rest, so statistics that count it are far off.
    x = rng.normal(size=(n, 6, 6, 1)).astype(np.float32)
    x[0] = x[0] * 5.0 + 3.0
    y = rng.normal(size=(n, 3)).astype(np.float32)
    return x, y


def new_state(x):
    return create_train_state(
        ConvBN(), "sgd", x[:1], loss="mse", metrics=(), learning_rate=0.1, seed=1
    )


def max_diff(a, b) -> float:
    diffs = jax.tree.map(lambda u, v: float(np.max(np.abs(np.asarray(u) - np.asarray(v)))), a, b)
    return max(jax.tree.leaves(diffs), default=0.0)


@pytest.fixture(scope="module")
def unpadded_reference():
    """One epoch of `train_step` on the batches of ``fit(shuffle=False)``, the last one unpadded."""
    x, y = conv_data()
    state, step_fn = new_state(x), jax.jit(train_step)
    for start in range(0, len(x), 8):
        xb, yb = x[start : start + 8], y[start : start + 8]
        state, _ = step_fn(state, {"x": xb, "y": yb, "mask": np.ones(len(xb), np.float32)})
    return state


def test_keras_repro_moving_statistics_of_the_real_rows():
    # Batches [0, 1, 2, 3] and [10] (padded to 4 rows): Keras's last batch is [10] alone.
    x = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]], np.float32)
    y = np.zeros((5, 1), np.float32)
    m = jaxnets.Sequential([jaxnets.layers.BatchNormalization(momentum=0.0, input_shape=(1,))])
    m.compile(optimizer="sgd", learning_rate=1e-30, loss="mse")
    m.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    stats = m.state.model_state["batch_stats"]["layers_0"]
    np.testing.assert_allclose(stats["mean"], [10.0])
    np.testing.assert_allclose(stats["var"], [0.0])


@pytest.mark.parametrize("shape", [(7, 3), (7, 4, 3), (7, 4, 5, 3)])
def test_layer_statistics_outputs_and_gradients_of_the_real_rows(shape):
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=shape).astype(np.float32)
    x[5:] = 100.0  # two padding rows, far from the real ones
    mask = np.array([1, 1, 1, 1, 1, 0, 0], np.float32)
    bn = BatchNormalization(momentum=0.0)
    v = bn.init(jax.random.key(0), jnp.asarray(x))
    axes = tuple(range(len(shape) - 1))
    real = x[:5]
    mean, var = real.mean(axes), real.var(axes)  # numpy oracle over the real rows

    def run(x, m):
        with contextlib.ExitStack() as stack:
            if m is not None:
                stack.enter_context(replicas.real_rows(m))
            return bn.apply(v, x, train=True, mutable=["batch_stats"])

    y, upd = run(jnp.asarray(x), mask)
    np.testing.assert_allclose(upd["batch_stats"]["mean"], mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(upd["batch_stats"]["var"], var, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y[:5], (real - mean) / np.sqrt(var + EPS), rtol=1e-4, atol=1e-4)
    # The gradient of a loss over the real rows is that of the unpadded batch; padding gets 0.
    weights = jnp.asarray(rng.normal(size=shape), jnp.float32) * mask.reshape(
        -1, *[1] * (len(shape) - 1)
    )
    g = jax.grad(lambda x: jnp.sum(run(x, mask)[0] * weights))(jnp.asarray(x))
    g_unpadded = jax.grad(lambda x: jnp.sum(run(x, None)[0] * weights[:5]))(jnp.asarray(real))
    np.testing.assert_allclose(g[:5], g_unpadded, rtol=1e-4, atol=1e-5)
    assert not np.any(np.asarray(g[5:]))


@pytest.mark.parametrize("sync", [False, True])
def test_all_real_rows_give_the_unmasked_numbers(sync):
    # In a compiled step (training always is) a mask of ones, as every full batch has,
    # gives the numbers of no mask (the code before masking) bitwise; only the gradient
    # of a synced (pmap) layer may differ in the last bit, where XLA fuses a multiply-add
    # differently. Both are the plain formulas.
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(2.0, 3.0, size=(4, 8, 5, 5, 3)), jnp.float32)  # 4 "devices"
    bn = BatchNormalization(momentum=0.9)
    v = bn.init(jax.random.key(0), x[0])
    v = {"params": v["params"], "batch_stats": {"mean": jnp.full(3, 0.3), "var": jnp.full(3, 2.0)}}

    def loss(params, x, mask):
        with contextlib.ExitStack() as stack:
            if sync:
                stack.enter_context(replicas.split_over("data"))
            if mask is not None:
                stack.enter_context(replicas.real_rows(mask))
            y, upd = bn.apply({**v, "params": params}, x, train=True, mutable=["batch_stats"])
        return jnp.sum(jnp.sin(y)), (y, upd)

    def run(masked):
        f = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
        per_device = jax.vmap(
            lambda x, m: f(v["params"], x, m if masked else None),
            axis_name="data" if sync else None,
        )
        return jax.jit(per_device)(x, jnp.ones(x.shape[:2]))

    (before, before_grads), (after, after_grads) = run(False), run(True)
    jax.tree.map(np.testing.assert_array_equal, before, after)
    if sync:
        close = functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7)
        jax.tree.map(close, before_grads, after_grads)
    else:
        jax.tree.map(np.testing.assert_array_equal, before_grads, after_grads)
    _, (y, upd) = after
    xs = np.asarray(x, np.float64)
    axes = (0, 1, 2, 3) if sync else (1, 2, 3)
    mean, var = xs.mean(axes, keepdims=True), xs.var(axes, keepdims=True)
    np.testing.assert_allclose(y, (xs - mean) / np.sqrt(var + EPS), rtol=1e-4, atol=1e-4)
    want = np.broadcast_to(0.9 * 0.3 + 0.1 * mean.reshape(-1, 3), (4, 3))
    np.testing.assert_allclose(upd["batch_stats"]["mean"], want, rtol=1e-5)
    want = np.broadcast_to(0.9 * 2.0 + 0.1 * var.reshape(-1, 3), (4, 3))
    np.testing.assert_allclose(upd["batch_stats"]["var"], want, rtol=1e-5)


@pytest.mark.parametrize(
    "kind,devices,accumulate",
    [
        ("local", 1, 1),
        pytest.param("jit", 4, 2, marks=FOUR_DEVICES),
        pytest.param("pmap", 4, 1, marks=FOUR_DEVICES),
        pytest.param("pmap", 4, 2, marks=FOUR_DEVICES),
    ],
)
def test_fit_on_full_batches_is_unchanged(monkeypatch, kind, devices, accumulate):
    # 32 rows in batches of 8: no padding, so the row mask changes nothing but XLA's
    # fusion of a few multiply-adds in the compiled step (the last bit of some gradients).
    x, y = conv_data(32)

    def run():
        jax.clear_caches()  # fresh engines and traces: the second run must retrace the step
        if kind == "local":
            engine = LocalEngine()
        else:
            cls = ShardedEngine if kind == "jit" else PmapEngine
            engine = cls(devices=jax.devices()[:devices], accumulate=accumulate)
        return fit(new_state(x), (x, y), batch_size=8, shuffle=False, verbose=0, engine=engine)[0]

    now = run()
    traced = []  # the code before the fix: no row mask reaches the model
    monkeypatch.setattr(step, "_real_rows", lambda m: traced.append(m) or contextlib.nullcontext())
    try:
        unmasked = run()
    finally:
        jax.clear_caches()  # no later test may reuse a trace without the mask
    assert traced
    assert max_diff(now.params, unmasked.params) < 1e-7
    assert max_diff(now.model_state, unmasked.model_state) < 1e-7


@pytest.mark.parametrize("fuse", [None, "epoch", "run"])
def test_fit_with_a_padded_last_batch_matches_the_unpadded_loop(fuse, unpadded_reference):
    x, y = conv_data()  # 21 rows: batches of 8, 8 and 5 (padded to 8)
    state, _ = fit(new_state(x), (x, y), batch_size=8, shuffle=False, verbose=0, fuse=fuse)
    assert max_diff(state.model_state, unpadded_reference.model_state) < TOL
    assert max_diff(state.params, unpadded_reference.params) < TOL


@FOUR_DEVICES
@pytest.mark.parametrize("kind", ["jit", "pmap"])
def test_four_devices_match_the_unpadded_loop(kind, unpadded_reference):
    # The last batch's 5 real rows over 4 devices: under pmap the last device holds only
    # padding (count 0), and the statistics are those of the 5 rows all the same.
    x, y = conv_data()
    state, _ = fit(
        new_state(x), (x, y), batch_size=8, shuffle=False, verbose=0, engine=make_engine(4, kind)
    )
    assert max_diff(state.model_state, unpadded_reference.model_state) < TOL
    assert max_diff(state.params, unpadded_reference.params) < TOL


def accumulate_reference(x, y, batch_size, k):
    """SGD where each batch's real rows ``j::k`` form microbatch ``j`` with its own statistics."""
    state = new_state(x)
    params, model_state = state.params, state.model_state

    def loss(params, model_state, xb, yb):
        total = 0.0
        for j in range(k):
            if len(xb[j::k]) == 0:
                continue  # a microbatch of padding only: no statistics, no update
            variables = {"params": params, **model_state}
            out, model_state = state.apply_fn(
                variables, xb[j::k], train=True, mutable=["batch_stats"]
            )
            total = total + jnp.sum(jnp.mean(jnp.square(out - yb[j::k]), axis=-1))
        return total / len(xb), model_state

    grad_fn = jax.jit(jax.grad(loss, has_aux=True))
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        grads, model_state = grad_fn(params, model_state, xb, yb)
        params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    return params, model_state


@pytest.mark.parametrize(
    "kind,devices,accumulate,n",
    [
        ("local", 1, 2, 21),
        ("local", 1, 4, 18),  # last batch 2 rows: microbatches 2 and 3 hold only padding
        pytest.param("jit", 4, 2, 21, marks=FOUR_DEVICES),
        pytest.param("pmap", 4, 2, 21, marks=FOUR_DEVICES),
    ],
)
def test_accumulation_normalizes_each_microbatch_by_its_real_rows(kind, devices, accumulate, n):
    x, y = conv_data(n)
    engine = make_engine(devices, kind, accumulate=accumulate)
    state, _ = fit(new_state(x), (x, y), batch_size=8, shuffle=False, verbose=0, engine=engine)
    params, model_state = accumulate_reference(x, y, 8, accumulate)
    assert np.all(
        np.isfinite(np.asarray(state.model_state["batch_stats"]["BatchNormalization_0"]["var"]))
    )
    assert max_diff(state.model_state, model_state) < TOL
    assert max_diff(state.params, params) < TOL
