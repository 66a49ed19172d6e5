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


@pytest.mark.parametrize("zero_output", [False, True])
@pytest.mark.parametrize("hoist", [True, False])
@pytest.mark.parametrize("cls", [SimpleRNN, LSTM, GRU])
def test_masked_steps_leave_state_unchanged(x, cls, hoist, zero_output):
    lengths = np.array([6, 3, 1])
    mask = jnp.asarray(np.arange(T)[None] < lengths[:, None])
    # Garbage in the padded steps must not matter.
    x_noisy = jnp.where(mask[..., None], x, 100.0)
    kw = dict(return_sequences=True, return_state=True, hoist_input=hoist)
    layer = cls(U, zero_output_for_mask=zero_output, **kw)
    v = _init(layer, x)
    seq, *state = layer.apply(v, x_noisy, mask=mask)
    for i, n in enumerate(lengths):
        ref_seq, *ref_state = layer.apply(v, x[i : i + 1, :n])
        np.testing.assert_allclose(seq[i, :n], ref_seq[0], rtol=1e-5, atol=1e-6)
        # Masked steps output zeros, or by default (Keras) repeat the last valid output.
        held = 0 if zero_output else seq[i, n - 1]
        assert (seq[i, n:] == held).all()
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


# --- Keras as the oracle (skipped where Keras is not installed) ---------------------------

# Gaps at the start, in the middle and at the end of the sequence, and a full row.
GAP_MASK = np.array(
    [[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [1, 1, 0, 0, 1, 1], [1, 1, 1, 1, 0, 0]], bool
)
# (Keras class, its arguments, jaxnets-only arguments): every path of the loop.
KERAS_CASES = [
    ("LSTM", {}, {"fused": True}),
    ("LSTM", {}, {"fused": False, "hoist_input": True}),
    ("LSTM", {}, {"fused": False, "hoist_input": False}),
    ("GRU", {"reset_after": True}, {}),
    ("GRU", {"reset_after": False}, {"hoist_input": True}),
    ("SimpleRNN", {}, {}),
]
GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}


@pytest.fixture(scope="module")
def keras():
    import os

    os.environ.setdefault("KERAS_BACKEND", "jax")
    return pytest.importorskip("keras")


def _keras_pair(keras, name, keras_kw, our_kw, **kw):
    """A built Keras layer and the jaxnets layer with its weights."""
    k = getattr(keras.layers, name)(U, **keras_kw, **kw)
    k.build((None, T, F))
    w = k.get_weights()
    ours = getattr(__import__("jaxnets.layers", fromlist=[name]), name)(
        U, **keras_kw, **our_kw, **kw
    )
    params = {"kernel": w[0], "recurrent_kernel": w[1], "bias": 0.5 + w[2]}
    k.set_weights([w[0], w[1], params["bias"]])  # a nonzero bias, in both
    return k, ours, {"params": params}


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("name,keras_kw,our_kw", KERAS_CASES)
def test_masked_sequence_outputs_match_keras(keras, rng, name, keras_kw, our_kw, go_backwards):
    x = rng.normal(size=(4, T, F)).astype(np.float32)
    n_states = 2 if name == "LSTM" else 1
    state0 = [rng.normal(size=(4, U)).astype(np.float32) for _ in range(n_states)]
    for zero_output in (False, True):
        kw = dict(return_sequences=True, return_state=True, go_backwards=go_backwards)
        k, ours, v = _keras_pair(
            keras, name, keras_kw, our_kw, zero_output_for_mask=zero_output, **kw
        )
        # A masked step outputs the carried h (the initial one before the first
        # valid step), or zeros with zero_output_for_mask; states as Keras's.
        want = k(x, mask=GAP_MASK, initial_state=state0)
        got = ours.apply(v, x, mask=jnp.asarray(GAP_MASK), initial_state=tuple(state0))
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, np.asarray(w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["LSTM", "GRU", "SimpleRNN"])
def test_bidirectional_masked_outputs_match_keras(keras, rng, name):
    # Keras' Bidirectional sets zero_output_for_mask on both directions; so does ours.
    from jaxnets import layers

    x = rng.normal(size=(4, T, F)).astype(np.float32)
    kb = keras.layers.Bidirectional(getattr(keras.layers, name)(U, return_sequences=True))
    want = np.asarray(kb(x, mask=GAP_MASK))
    w = kb.get_weights()
    names = ("kernel", "recurrent_kernel", "bias")
    v = {"params": {"forward": dict(zip(names, w[:3])), "backward": dict(zip(names, w[3:]))}}
    bi = Bidirectional(getattr(layers, name)(U, return_sequences=True))
    np.testing.assert_allclose(bi.apply(v, x, mask=jnp.asarray(GAP_MASK)), want, atol=1e-5)


@pytest.mark.parametrize("rates", [(0.3, 0.0), (0.0, 0.6), (0.3, 0.6)])
@pytest.mark.parametrize("name,keras_kw,our_kw", KERAS_CASES)
def test_dropout_equations_match_keras_given_the_masks(
    keras, rng, monkeypatch, name, keras_kw, our_kw, rates
):
    # The masks are random, so both libraries get the same masks; Keras then says
    # where they apply: one input mask for all gates, or (with recurrent_dropout,
    # Keras' implementation 1) one input and one state mask per gate.
    from jaxnets.layers import recurrent

    dropout, recurrent_dropout = rates
    x = rng.normal(size=(4, T, F)).astype(np.float32)
    g = GATES[name]
    masks = {
        r: [((rng.random((4, d)) >= r) / (1 - r)).astype(np.float32) for _ in range(g)]
        for r, d in ((dropout, F), (recurrent_dropout, U))
        if r
    }
    per_gate = recurrent_dropout > 0 and g > 1

    def given(self, rate, n, shape, dtype):
        assert n == (g if recurrent_dropout else 1)
        return tuple(jnp.asarray(m, dtype) for m in masks[rate][:n])

    monkeypatch.setattr(recurrent._RNN, "_dropout_masks", given)
    kw = dict(return_sequences=True, dropout=dropout, recurrent_dropout=recurrent_dropout)
    k, ours, v = _keras_pair(keras, name, keras_kw, our_kw, **kw)
    # Keras draws its masks only when none is cached: give it ours.
    if dropout:
        k.cell._dropout_mask = masks[dropout] if per_gate else masks[dropout][0]
    if recurrent_dropout:
        rec = masks[recurrent_dropout]
        k.cell._recurrent_dropout_mask = rec if g > 1 else rec[0]
    want = np.asarray(k(x, mask=GAP_MASK, training=True))
    got = ours.apply(v, x, train=True, mask=jnp.asarray(GAP_MASK))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Eval mode ignores the rates (and draws nothing).
    np.testing.assert_allclose(
        ours.apply(v, x), np.asarray(k(x, training=False)), rtol=1e-5, atol=1e-5
    )


# --- dropout and recurrent_dropout ------------------------------------------------------


@pytest.mark.parametrize("arg", ["dropout", "recurrent_dropout"])
@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_dropout_rates_outside_unit_interval_are_config_errors(arg, rate):
    with pytest.raises(ConfigError, match=rf"{arg} must be in \[0, 1\)"):
        GRU(U, **{arg: rate})


@pytest.mark.parametrize("cls", [SimpleRNN, LSTM, GRU])
def test_dropout_off_in_eval_and_at_rate_zero(x, cls):
    base = cls(U, return_sequences=True, return_state=True)
    v = _init(base, x)
    want = base.apply(v, x)
    # Eval mode: the rates change nothing.
    got = base.clone(dropout=0.5, recurrent_dropout=0.5).apply(v, x)
    # Rates of zero in train mode: bitwise the layer without dropout, and no RNG needed.
    got0 = base.clone(dropout=0.0, recurrent_dropout=0.0).apply(v, x, train=True)
    for a, b, w in zip(got, got0, want, strict=True):
        np.testing.assert_array_equal(a, w)
        np.testing.assert_array_equal(b, w)


@pytest.mark.parametrize("rates", [(0.5, 0.0), (0.3, 0.3)])
@pytest.mark.parametrize("cls", [SimpleRNN, LSTM, GRU])
def test_dropout_in_train_depends_on_the_rng_only(x, cls, rates):
    layer = cls(U, return_sequences=True, dropout=rates[0], recurrent_dropout=rates[1])
    v = _init(layer, x)
    run = jax.jit(lambda key: layer.apply(v, x, train=True, rngs={"dropout": key}))
    first = run(jax.random.key(1))
    np.testing.assert_array_equal(run(jax.random.key(1)), first)
    assert np.abs(run(jax.random.key(2)) - first).max() > 1e-3
    assert np.abs(layer.apply(v, x) - first).max() > 1e-3


def test_dropout_masks_are_scaled_and_one_per_gate():
    # The helper itself: n independent (B, D) masks of 0 and 1 / (1 - rate).
    masks = LSTM(U).apply(
        {},
        0.5,
        4,
        (200, 50),
        jnp.float32,
        rngs={"dropout": jax.random.key(0)},
        method=LSTM._dropout_masks,
    )
    assert len(masks) == 4
    for m in masks:
        assert m.shape == (200, 50) and set(np.unique(m).tolist()) == {0.0, 2.0}
        assert abs(float((m == 0).mean()) - 0.5) < 0.02
    assert not np.array_equal(masks[0], masks[1])


def test_input_dropout_mask_is_one_per_sequence():
    # h_t = x_t * mask with identity kernel, no recurrence and a linear activation:
    # every step of a sequence must drop the same features, and sequences differ.
    n, f = 64, 8
    layer = SimpleRNN(f, activation=None, return_sequences=True, use_bias=False, dropout=0.5)
    x = jnp.ones((n, T, f))
    v = {"params": {"kernel": jnp.eye(f), "recurrent_kernel": jnp.zeros((f, f))}}
    y = np.asarray(layer.apply(v, x, train=True, rngs={"dropout": jax.random.key(1)}))
    assert set(np.unique(y).tolist()) == {0.0, 2.0}
    assert (y == y[:, :1]).all()  # the same mask at every step
    assert len({tuple(row) for row in y[:, 0]}) > n // 2  # but its own per sequence
    assert abs(float((y == 0).mean()) - 0.5) < 0.06


def test_recurrent_dropout_mask_is_one_per_sequence():
    # h_t = h_{t-1} * mask (no input, identity recurrence, h_0 = 1): the same mask at
    # every step gives h_t = mask ** t, 0 or 2 ** t, with the same zeros at every t.
    n = 64
    layer = SimpleRNN(
        U, activation=None, return_sequences=True, use_bias=False, recurrent_dropout=0.5
    )
    x = jnp.ones((n, T, 2))
    v = {"params": {"kernel": jnp.zeros((2, U)), "recurrent_kernel": jnp.eye(U)}}
    y = layer.apply(
        v, x, train=True, initial_state=jnp.ones((n, U)), rngs={"dropout": jax.random.key(1)}
    )
    y = np.asarray(y)
    keep = y[:, :1] != 0
    powers = 2.0 ** np.arange(1, T + 1)[None, :, None]
    np.testing.assert_array_equal(y, np.where(keep, powers, 0.0))
    assert 0.3 < keep.mean() < 0.7


@pytest.mark.parametrize("rates", [(0.4, 0.0), (0.4, 0.4)])
def test_fused_lstm_with_dropout_matches_scan_values_and_gradients(x, rates):
    # Input dropout runs through the fused op; with recurrent dropout the layer falls
    # back to the scan. Same RNG, same masks, so fused=True and fused=False agree.
    kw = dict(return_sequences=True, dropout=rates[0], recurrent_dropout=rates[1])
    fused, scan = LSTM(U, fused=True, **kw), LSTM(U, fused=False, **kw)
    v = _init(fused, x)
    mask = jnp.asarray(np.arange(T)[None] < np.array([[6], [3], [1]]))
    rngs = {"dropout": jax.random.key(5)}

    def loss(layer, params):
        y = layer.apply({"params": params}, x, train=True, mask=mask, rngs=rngs)
        return jnp.sum(jnp.sin(y))

    np.testing.assert_allclose(loss(fused, v["params"]), loss(scan, v["params"]), rtol=1e-5)
    got = jax.grad(loss, argnums=1)(fused, v["params"])
    want = jax.grad(loss, argnums=1)(scan, v["params"])
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert np.isfinite(g).all() and np.abs(g).max() > 0
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [SimpleRNN, GRU])
def test_dropout_gradients_are_finite(x, cls):
    layer = cls(U, dropout=0.3, recurrent_dropout=0.3)
    v = _init(layer, x)
    rngs = {"dropout": jax.random.key(0)}
    grads = jax.grad(lambda p: jnp.sum(layer.apply({"params": p}, x, train=True, rngs=rngs) ** 2))(
        v["params"]
    )
    for g in jax.tree.leaves(grads):
        assert np.isfinite(g).all() and np.abs(g).max() > 0


def test_dropout_under_split_replicas_matches_the_whole_batch(x):
    # Under pmap each replica draws its rows of the global batch's masks from the
    # replicated stream (as Dropout does), so the device count changes nothing.
    from jaxnets.layers.replicas import REPLICATED_RNG, split_over

    layer = LSTM(U, return_sequences=True, dropout=0.4, recurrent_dropout=0.4)
    xs = jnp.concatenate([x, x[::-1] * 2, x * 0.5, -x])  # 12 rows, 4 replicas of 3
    v = _init(layer, xs)
    key = jax.random.key(7)
    whole = layer.apply(v, xs, train=True, rngs={"dropout": key})

    def per_device(rows, i):
        with split_over("data"):
            rngs = {"dropout": jax.random.fold_in(key, i), REPLICATED_RNG: key}
            return layer.apply(v, rows, train=True, rngs=rngs)

    split = jax.vmap(per_device, axis_name="data")(xs.reshape(4, B, T, F), jnp.arange(4))
    np.testing.assert_allclose(split.reshape(whole.shape), whole, rtol=1e-6, atol=1e-6)


def test_bidirectional_with_dropout_draws_per_direction(x):
    bi = Bidirectional(GRU(U, return_sequences=True, dropout=0.5), merge_mode=None)
    v = bi.init(jax.random.key(0), x)
    fwd, bwd = bi.apply(v, x, train=True, rngs={"dropout": jax.random.key(1)})
    assert fwd.shape == bwd.shape == (B, T, U)
    ref_f, ref_b = bi.apply(v, x)
    assert np.abs(fwd - ref_f).max() > 1e-3 and np.abs(bwd - ref_b).max() > 1e-3
