"""Numerics bug hunt: custom kernels against XLA, half precision against float32, guards.

Oracles: XLA's own convolution (`lax.conv_general_dilated`, `lax.conv_transpose`,
``feature_group_count``) run in float32 as the reference for the CPU kernels of
`jaxnets.layers.conv_ops` under bfloat16; exact arithmetic for pooling and the
finite-check of the training step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets.layers import AveragePooling1D, AveragePooling2D, conv_ops
from jaxnets.layers.pooling import pool
from jaxnets.training.step import all_finite


def _rms(a, ref) -> float:
    return float(jnp.sqrt(jnp.mean((a.astype(jnp.float32) - ref) ** 2)))


def _bf16_errors(fn, x, kernel, argnum=None):
    """RMS error of ``fn`` in bfloat16 against ``fn`` in float32 (outputs, or a gradient)."""
    if argnum is None:
        ref = fn(x, kernel)
        half = fn(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16))
    else:

        def loss(x, k):
            return jnp.sum(jnp.sin(fn(x, k).astype(jnp.float32)))

        grad = jax.grad(loss, argnums=argnum)
        ref = grad(x, kernel)
        half = grad(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16))
    return _rms(half, ref)


@pytest.mark.parametrize(
    "case",
    ["depthwise-out", "depthwise-dx", "transpose-out", "conv-dx"],
)
def test_bfloat16_cpu_kernels_as_accurate_as_xla(case):
    # The im2col/col2im kernels used to sum each kernel tap's product in bfloat16,
    # rounding once per tap; XLA's convolution sums in float32 and rounds once. Their
    # errors against the float32 result were 2.9x (7x7 depthwise output), 2.1x
    # (depthwise input gradient), 2.1x (5x5 transposed conv output) and 2.0x
    # (5x5 conv input gradient) those of XLA's convolution in bfloat16.
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 10, 10, 8)), jnp.float32)
    if case.startswith("depthwise"):
        kernel = jnp.asarray(rng.normal(size=(7, 7, 8, 2)) / 7, jnp.float32)

        def make(impl):
            return lambda x, k: conv_ops.depthwise_conv(
                x, k, strides=(1, 1), padding="same", impl=impl
            )

        fast, xla = make("im2col"), make("xla")
    else:
        kernel = jnp.asarray(rng.normal(size=(5, 5, 8, 4)) / 15, jnp.float32)
        if case.startswith("transpose"):
            fast_op, xla_op = conv_ops.conv_transpose_col2im, conv_ops.conv_transpose_xla
        else:
            fast_op, xla_op = conv_ops.conv_im2col, conv_ops.conv_xla

        def fast(x, k):
            return fast_op(x, k, strides=(1, 1), padding="same")

        def xla(x, k):
            return xla_op(x, k, strides=(1, 1), padding="same")

    argnum = 0 if case.endswith("dx") else None
    fast_err = _bf16_errors(fast, x, kernel, argnum)
    xla_err = _bf16_errors(xla, x, kernel, argnum)
    assert fast_err <= 1.2 * xla_err, (fast_err, xla_err)


def test_bfloat16_cpu_kernels_keep_dtypes():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(1, 5, 5, 2)), jnp.bfloat16)
    k = jnp.asarray(rng.normal(size=(3, 3, 2, 2)), jnp.bfloat16)
    outs = [
        conv_ops.conv_im2col(x, k, strides=(1, 1), padding="same"),
        conv_ops.conv_transpose_col2im(x, k, strides=(2, 2), padding="same"),
        conv_ops.depthwise_conv(x, k, strides=(1, 1), padding="same", impl="im2col"),
        conv_ops.conv_maxpool_im2col(x, k, (2, 2)),
    ]
    assert [o.dtype for o in outs] == [jnp.bfloat16] * 4

    def loss(x, k):
        return jnp.sum(conv_ops.conv_maxpool_im2col(x, k, (2, 2)).astype(jnp.float32))

    gx, gk = jax.grad(loss, argnums=(0, 1))(x, k)
    assert (gx.dtype, gk.dtype) == (jnp.bfloat16, jnp.bfloat16)


@pytest.mark.parametrize("impl", ["im2col", "xla"])
@pytest.mark.parametrize(("strides", "padding"), [(1, "valid"), (2, "valid"), (1, "same")])
def test_average_pooling_of_small_integers_does_not_wrap(impl, strides, padding):
    # A window of four uint8 200s averages to 200; the sum used to run in uint8 and
    # wrap (800 mod 256 = 32, mean 8.0), except on the tiling path (pool == stride,
    # im2col), which summed in uint32 and gave 200: the impls disagreed.
    x = np.full((1, 4, 4, 1), 200, np.uint8)
    y = AveragePooling2D(2, strides=strides, padding=padding, impl=impl).apply({}, x)
    assert y.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(y), 200.0)
    steps = jnp.asarray(np.array([[[100], [100], [-100], [-100], [100]]], np.int8))
    y1 = AveragePooling1D(2, strides=1, impl=impl).apply({}, steps)
    np.testing.assert_array_equal(np.asarray(y1)[0, :, 0], [100.0, 0.0, -100.0, 0.0])


def test_average_pooling_of_floats_unchanged():
    x = jnp.arange(16.0, dtype=jnp.bfloat16).reshape(1, 4, 4, 1)
    assert pool(x, (2, 2), (2, 2), "valid", "avg", "im2col").dtype == jnp.bfloat16
    assert pool(x, (2, 2), (1, 1), "valid", "max", "im2col").dtype == jnp.bfloat16


def test_all_finite_with_empty_leaves():
    # A leaf with a zero-sized last axis made the (-1, 0) reshape fail while tracing
    # (ZeroDivisionError); empty arrays hold no inf or NaN.
    one = jnp.float32(1.0)
    tree = {"w": jnp.ones((3, 0)), "v": jnp.ones((0, 2)), "b": jnp.ones(2)}
    assert bool(jax.jit(all_finite)(tree, one))
    tree["b"] = tree["b"].at[1].set(jnp.nan)
    assert not bool(jax.jit(all_finite)(tree, one))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16, jnp.complex64])
@pytest.mark.parametrize("shape", [(), (3,), (2, 3), (2, 3, 4)])
def test_all_finite_every_dtype_and_rank(dtype, shape):
    one = jnp.float32(1.0)
    big = jnp.full(shape, jnp.finfo(dtype).max, dtype)  # finite: 0 * max is 0
    assert bool(all_finite({"w": big}, one))
    for bad in (jnp.nan, jnp.inf, -jnp.inf):
        x = jnp.ones(shape, dtype).reshape(-1).at[-1].set(bad).reshape(shape)
        assert not bool(all_finite({"w": x}, one)), (dtype, shape, bad)


def test_fused_lstm_cotangents_in_primal_dtypes():
    # bfloat16 inputs with a float32 initial state run the fused loop in float32; its
    # backward pass returned a float32 input gradient for the bfloat16 inputs (the
    # scan returns bfloat16), which JAX accepts only as a "temporary exception".
    from jaxnets.layers import LSTM

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 4, 3)), jnp.bfloat16)
    h0 = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
    c0 = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
    mask = jnp.array([[1, 1, 0, 1], [0, 1, 1, 1]], bool)
    layer = LSTM(5, fused=True, return_sequences=True)
    variables = layer.init(jax.random.key(0), x)

    def loss(x, h0, c0):
        out = layer.apply(variables, x, mask=mask, initial_state=(h0, c0))
        return jnp.sum(out.astype(jnp.float32))

    dx, dh0, dc0 = jax.grad(loss, argnums=(0, 1, 2))(x, h0, c0)
    assert (dx.dtype, dh0.dtype, dc0.dtype) == (jnp.bfloat16, jnp.float32, jnp.float32)
    scan = layer.clone(fused=False)
    ref = jax.grad(
        lambda x: jnp.sum(scan.apply(variables, x, mask=mask, initial_state=(h0, c0))),
    )(x)
    np.testing.assert_allclose(np.asarray(dx, np.float32), np.asarray(ref, np.float32), atol=0.05)


def test_loss_scale_never_grows_to_inf():
    # Doubling 2**127 gave an inf scale; then every step was non-finite (the loss
    # times inf) and halving kept it inf: float16 training skipped every later step.
    from jaxnets.precision import DynamicScale

    ls = DynamicScale.create(initial=2.0**127, period=1)
    ls = ls.adjust(jnp.array(True))
    assert float(ls.scale) == 2.0**127 and int(ls.good_steps) == 0
    assert float(ls.adjust(jnp.array(False)).scale) == 2.0**126
    ls = DynamicScale.create(initial=2.0**15, period=2)
    scales = []
    for finite in (True, True, True, False, True):
        ls = ls.adjust(jnp.array(finite))
        scales.append(float(ls.scale))
    assert scales == [2.0**15, 2.0**16, 2.0**16, 2.0**15, 2.0**15]


def test_float16_step_skips_overflow_and_halves_scale():
    # Oracle: Keras's LossScaleOptimizer (skip the update and halve the scale on a
    # non-finite gradient) with the parameters bitwise unchanged on such a step.
    import flax.linen as nn

    from jaxnets.training import create_train_state, train_step

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    y = (rng.normal(size=(8, 1)) * 30).astype(np.float32)  # gradients * 2**15 overflow float16
    batch = {"x": x, "y": y, "mask": np.ones(8, np.float32)}
    state = create_train_state(
        nn.Dense(1), "adam", x[:1], precision="float16", loss="mse", metrics=()
    )
    step = jax.jit(train_step)
    scales, skipped = [], []
    for _ in range(6):
        before = jax.tree.map(np.asarray, (state.params, state.opt_state))
        state, _ = step(state, batch)
        after = jax.tree.map(np.asarray, (state.params, state.opt_state))
        same = all(
            np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after))
        )
        scales.append(float(state.loss_scale.scale))
        skipped.append((int(state.skipped), same))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state.params))
    n = sum(1 for _, same in skipped if same)
    assert n >= 1 and scales[:n] == [2.0 ** (15 - i) for i in range(1, n + 1)]
    assert skipped[n - 1] == (n, True) and skipped[-1] == (n, False)


def test_float16_rollback_ignores_loss_scale_overflow_skips(tmp_path, capsys):
    # Dynamic loss scaling skips the steps whose float16 gradients overflow and halves
    # the scale: a routine skip. on_nonfinite="rollback" took it for divergence and
    # threw away the whole epoch's good updates (the parameters of the "skip" run differ).
    from jaxnets.layers import Dense
    from jaxnets.training import create_train_state, fit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype(np.float32)
    y = (rng.normal(size=(32, 1)) * 30).astype(np.float32)

    def run(**kw):
        state = create_train_state(
            Dense(1),
            "adam",
            x[:1],
            learning_rate=1e-2,
            precision="float16",
            loss="mse",
            metrics=(),
        )
        return fit(state, (x, y), epochs=3, batch_size=8, verbose=0, shuffle=False, **kw)

    skip, h_skip = run()
    assert h_skip["skipped"][1] >= 1  # an overflow after the first epoch: the case at hand
    back, h_back = run(workdir=tmp_path, on_nonfinite="rollback")
    assert h_back["skipped"] == h_skip["skipped"]
    for a, b in zip(jax.tree.leaves(skip.params), jax.tree.leaves(back.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
