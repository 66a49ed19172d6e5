"""Recurrent layers against step-by-step numpy implementations of Keras' equations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxnets.errors import ConfigError, ShapeError
from jaxnets.layers import GRU, LSTM, Bidirectional, SimpleRNN
from jaxnets.layers.lstm_fused import lstm_sequence

B, T, F, U = 3, 6, 4, 5


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_lstm(x, p):
    k, rk, b = (np.asarray(p[n], np.float64) for n in ("kernel", "recurrent_kernel", "bias"))
    h, c, hs = np.zeros((x.shape[0], U)), np.zeros((x.shape[0], U)), []
    for t in range(x.shape[1]):
        z = x[:, t] @ k + h @ rk + b
        i, f, g, o = z[:, :U], z[:, U : 2 * U], z[:, 2 * U : 3 * U], z[:, 3 * U :]
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        hs.append(h)
    return np.stack(hs, 1), h, c


def np_gru(x, p, reset_after):
    k, rk, b = (np.asarray(p[n], np.float64) for n in ("kernel", "recurrent_kernel", "bias"))
    h, hs = np.zeros((x.shape[0], U)), []
    for t in range(x.shape[1]):
        if reset_after:
            mx, mi = x[:, t] @ k + b[0], h @ rk + b[1]
            z = sigmoid(mx[:, :U] + mi[:, :U])
            r = sigmoid(mx[:, U : 2 * U] + mi[:, U : 2 * U])
            hh = np.tanh(mx[:, 2 * U :] + r * mi[:, 2 * U :])
        else:
            mx = x[:, t] @ k + b
            z = sigmoid(mx[:, :U] + h @ rk[:, :U])
            r = sigmoid(mx[:, U : 2 * U] + h @ rk[:, U : 2 * U])
            hh = np.tanh(mx[:, 2 * U :] + (r * h) @ rk[:, 2 * U :])
        h = z * h + (1 - z) * hh
        hs.append(h)
    return np.stack(hs, 1), h


def np_simple(x, p):
    k, rk, b = (np.asarray(p[n], np.float64) for n in ("kernel", "recurrent_kernel", "bias"))
    h, hs = np.zeros((x.shape[0], U)), []
    for t in range(x.shape[1]):
        h = np.tanh(x[:, t] @ k + h @ rk + b)
        hs.append(h)
    return np.stack(hs, 1), h


def _init(layer, x, seed=0):
    params = layer.init(jax.random.key(seed), x)["params"]
    # Random biases so the bias paths (and GRU's two biases) are exercised.
    key = jax.random.key(seed + 1)
    params = {**params, "bias": 0.5 * jax.random.normal(key, params["bias"].shape)}
    return {"params": params}


@pytest.fixture
def x(rng):
    return jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)


@pytest.mark.parametrize("hoist", [True, False])
def test_lstm_matches_numpy(x, hoist):
    layer = LSTM(U, return_sequences=True, return_state=True, hoist_input=hoist)
    v = _init(layer, x)
    seq, h, c = layer.apply(v, x)
    want_seq, want_h, want_c = np_lstm(np.asarray(x, np.float64), v["params"])
    for got, want in ((seq, want_seq), (h, want_h), (c, want_c)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_lstm_unit_forget_bias():
    v = LSTM(U).init(jax.random.key(0), jnp.ones((1, 2, F)))
    np.testing.assert_array_equal(
        v["params"]["bias"], np.r_[np.zeros(U), np.ones(U), np.zeros(2 * U)]
    )


@pytest.mark.parametrize("hoist", [True, False])
@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_matches_numpy(x, reset_after, hoist):
    layer = GRU(U, return_sequences=True, reset_after=reset_after, hoist_input=hoist)
    v = _init(layer, x)
    assert v["params"]["bias"].shape == ((2, 3 * U) if reset_after else (3 * U,))
    want_seq, want_h = np_gru(np.asarray(x, np.float64), v["params"], reset_after)
    np.testing.assert_allclose(layer.apply(v, x), want_seq, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        GRU(U, reset_after=reset_after).apply(v, x), want_h, rtol=1e-4, atol=1e-5
    )


def test_simple_rnn_matches_numpy(x):
    layer = SimpleRNN(U, return_sequences=True)
    v = _init(layer, x)
    np.testing.assert_allclose(
        layer.apply(v, x),
        np_simple(np.asarray(x, np.float64), v["params"])[0],
        rtol=1e-4,
        atol=1e-5,
    )


@pytest.mark.parametrize("hoist", [True, False])
@pytest.mark.parametrize("cls", [SimpleRNN, LSTM, GRU])
def test_masked_steps_leave_state_unchanged(x, cls, hoist):
    lengths = np.array([6, 3, 1])
    mask = jnp.asarray(np.arange(T)[None] < lengths[:, None])
    # Garbage in the padded steps must not matter.
    x_noisy = jnp.where(mask[..., None], x, 100.0)
    layer = cls(U, return_sequences=True, return_state=True, hoist_input=hoist)
    v = _init(layer, x)
    seq, *state = layer.apply(v, x_noisy, mask=mask)
    for i, n in enumerate(lengths):
        ref_seq, *ref_state = layer.apply(v, x[i : i + 1, :n])
        np.testing.assert_allclose(seq[i, :n], ref_seq[0], rtol=1e-5, atol=1e-6)
        assert (seq[i, n:] == 0).all()  # masked steps output zeros
        for s, r in zip(state, ref_state, strict=True):
            np.testing.assert_allclose(s[i], r[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_go_backwards_reads_reversed_input(x, cls):
    fwd = cls(U, return_sequences=True)
    v = _init(fwd, x)
    bwd = cls(U, return_sequences=True, go_backwards=True)
    # As in Keras, the sequence output stays in processing (reversed) order.
    np.testing.assert_allclose(bwd.apply(v, x), fwd.apply(v, x[:, ::-1]), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_bidirectional_concat_and_masking(x):
    inner = LSTM(U, return_sequences=True)
    bi = Bidirectional(inner)
    v = bi.init(jax.random.key(0), x)
    assert set(v["params"]) == {"forward", "backward"}
    out = bi.apply(v, x)
    f = inner.apply({"params": v["params"]["forward"]}, x)
    b = inner.apply({"params": v["params"]["backward"]}, x[:, ::-1])[:, ::-1]
    np.testing.assert_allclose(out, np.concatenate([f, b], -1), rtol=1e-5, atol=1e-6)
    # With a mask, the backward pass of a short sequence starts at its own end.
    mask = jnp.asarray(np.arange(T)[None] < np.array([[6], [3], [1]]))
    out_m = bi.apply(v, x, mask=mask)
    short = bi.apply(v, x[1:2, :3])
    np.testing.assert_allclose(out_m[1, :3], short[0], rtol=1e-5, atol=1e-6)
    summed = Bidirectional(LSTM(U), merge_mode="sum").apply(v, x)
    assert summed.shape == (B, U)


@pytest.mark.parametrize("unroll", [4, 8, True])
def test_unroll_does_not_change_results(x, unroll):
    v = _init(GRU(U), x)
    np.testing.assert_allclose(
        GRU(U, unroll=unroll).apply(v, x), GRU(U).apply(v, x), rtol=1e-5, atol=1e-6
    )


def test_initial_state_and_gradients(x):
    layer = LSTM(U, return_state=True)
    v = _init(layer, x)
    _, h, c = layer.apply(v, x[:, :3])
    # Running the rest from the returned state continues the same sequence.
    out_rest, *_ = layer.apply(v, x[:, 3:], initial_state=(h, c))
    out_full, *_ = layer.apply(v, x)
    np.testing.assert_allclose(out_rest, out_full, rtol=1e-5, atol=1e-6)
    mask = jnp.asarray(np.arange(T)[None] < np.array([[6], [3], [1]]))
    grads = jax.grad(lambda p: jnp.sum(layer.apply({"params": p}, x, mask=mask)[0] ** 2))(
        v["params"]
    )
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_shape_errors(x):
    with pytest.raises(ShapeError, match="batch, time, features"):
        LSTM(U).init(jax.random.key(0), x[0])
    with pytest.raises(ShapeError, match="mask"):
        LSTM(U).init(jax.random.key(0), x, mask=jnp.ones((B, T + 1), bool))


def test_bidirectional_return_state(x):
    bi = Bidirectional(LSTM(U, return_state=True))
    v = bi.init(jax.random.key(0), x)
    out, fh, fc, bh, bc = bi.apply(v, x)
    assert out.shape == (B, 2 * U)
    np.testing.assert_allclose(out, np.concatenate([fh, bh], -1))
    assert fc.shape == bc.shape == (B, U)


@pytest.mark.parametrize("go_backwards", [False, True])
def test_fused_lstm_matches_scan_values_and_gradients(x, go_backwards):
    # The whole-sequence op (hand-written backward) against autodiff of the scan.
    kw = dict(return_sequences=True, return_state=True, go_backwards=go_backwards)
    fused, scan = LSTM(U, fused=True, **kw), LSTM(U, fused=False, **kw)
    v = _init(fused, x)
    mask = jnp.asarray(np.arange(T)[None] < np.array([[6], [3], [0]]))
    k1, k2 = jax.random.split(jax.random.key(3))
    state0 = (jax.random.normal(k1, (B, U)), jax.random.normal(k2, (B, U)))

    def loss(layer, params, x, state0):
        seq, h, c = layer.apply({"params": params}, x, mask=mask, initial_state=state0)
        return jnp.sum(jnp.sin(seq)) + jnp.sum(h * c) + jnp.sum(c**2)

    for layer_out, ref_out in zip(
        fused.apply(v, x, mask=mask, initial_state=state0),
        scan.apply(v, x, mask=mask, initial_state=state0),
        strict=True,
    ):
        np.testing.assert_allclose(layer_out, ref_out, rtol=1e-6, atol=1e-6)
    grad = jax.grad(loss, argnums=(1, 2, 3))
    got = grad(fused, v["params"], x, state0)
    want = grad(scan, v["params"], x, state0)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_fused_lstm_check_grads():
    with jax.enable_x64(True):  # float64, so the finite differences are accurate
        ks = jax.random.split(jax.random.key(0), 6)
        xs = jax.random.normal(ks[0], (4, 2, 3), jnp.float64)
        h0, c0 = (jax.random.normal(k, (2, 2), jnp.float64) for k in ks[1:3])
        kernel = 0.5 * jax.random.normal(ks[3], (3, 8), jnp.float64)
        rk = 0.5 * jax.random.normal(ks[4], (2, 8), jnp.float64)
        bias = jax.random.normal(ks[5], (8,), jnp.float64)
        mask = jnp.asarray([[1, 1], [1, 0], [0, 0], [1, 0]], bool)[..., None]
        args = (xs, h0, c0, kernel, rk, bias)
        check_grads(lambda *a: lstm_sequence(*a, mask), args, order=1, modes=["rev"])


def test_fused_lstm_gradients_under_vmap_equal_each_members(x):
    # Populations vmap the step over members: the hand-written backward must batch.
    layer = LSTM(U, fused=True)
    members = [_init(layer, x, seed=s)["params"] for s in range(3)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *members)

    def loss(params):
        return jnp.sum(jnp.tanh(layer.apply({"params": params}, x)) ** 2)

    batched = jax.vmap(jax.grad(loss))(stacked)
    for i, params in enumerate(members):
        for got, want in zip(jax.tree.leaves(batched), jax.tree.leaves(jax.grad(loss)(params))):
            np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)


def test_fused_lstm_in_bfloat16_keeps_dtypes_and_tracks_float32(x):
    # Mixed precision runs the layer on bfloat16 weights; its weight gradients add
    # up over the steps in float32 and come back in the weights' dtype.
    layer = LSTM(U, fused=True)
    params = _init(layer, x)["params"]

    def grads(dtype):
        p16 = jax.tree.map(lambda a: a.astype(dtype), params)
        loss = lambda p: jnp.sum(layer.apply({"params": p}, x.astype(dtype)).astype(jnp.float32))  # noqa: E731
        return jax.grad(loss)(p16)

    low, full = grads(jnp.bfloat16), grads(jnp.float32)
    for g16, g32 in zip(jax.tree.leaves(low), jax.tree.leaves(full)):
        assert g16.dtype == jnp.bfloat16
        np.testing.assert_allclose(g16.astype(jnp.float32), g32, rtol=0.02, atol=0.02)


def test_fused_lstm_choice_and_errors(x):
    with pytest.raises(ConfigError, match="recurrent_activation='sigmoid'"):
        LSTM(U, fused=True, recurrent_activation="hard_sigmoid").init(jax.random.key(0), x)
    with pytest.raises(ConfigError, match="hoist_input"):
        LSTM(U, fused=True, hoist_input=True).init(jax.random.key(0), x)
    # Other activations fall back to the scan by themselves.
    v = _init(LSTM(U), x)
    out = LSTM(U, activation="relu").apply(v, x)
    assert out.shape == (B, U) and np.isfinite(out).all()
