"""A whole-sequence LSTM with a hand-written backward pass (``custom_vjp``).

`lstm_sequence` runs the Keras LSTM (gates i, f, c, o; sigmoid and tanh) over
all time steps and gives the values of differentiating the per-step `lax.scan`
of `jaxnets.layers.LSTM` (to float rounding), with loops written for XLA:CPU:

* each forward step makes one product, ``[x_t, h] @ [kernel; recurrent_kernel]``,
  not one per weight: on the benchmark LSTM (64 steps, batch 64, 32 inputs, 128
  units) the layer's forward and backward took 11.3 ms against 12.7 ms with two
  (jax 0.10, 2 cores);
* the reverse loop computes the gate gradients ``dgates_t`` (B, 4U),
  ``[dx_t, dh_{t-1}] = dgates_t @ [kernel; recurrent_kernel].T`` and adds
  ``[x_t, h_{t-1}].T @ dgates_t`` to a weight gradient carried in float32;
* it stores no (T, B, 4U) stack of gate gradients. Stacking them for one
  product per weight after the loop was 14% slower on the benchmark LSTM
  (XLA:CPU zero-fills such a scan output and writes it step by step, which
  cost more than T small products; jax 0.10, 2 cores). Nor does it pair steps
  for one weight-gradient product per two steps (13.6 ms against 11.4).

The forward loop stores the activated gates, ``tanh(c)``, the carried cell
states and each step's ``[x_t, h]``, so the backward loop needs no transcendental function: on XLA:CPU an
elementwise fusion that reads a per-step slice of a stacked buffer is not
vectorised (a ``tanh`` of such a slice measured ~7x slower than of a plain
array; jax 0.10), which is also what makes the autodiff of the scan slow there.

Masking follows `jaxnets.layers.LSTM`: a masked step keeps the carried state.

Example:
  >>> import jax, jax.numpy as jnp
  >>> xs = jnp.ones((5, 2, 3))  # (time, batch, features)
  >>> h0 = c0 = jnp.zeros((2, 4))
  >>> kernel, rk, bias = jnp.ones((3, 16)) * 0.1, jnp.zeros((4, 16)), jnp.zeros(16)
  >>> hs, c = lstm_sequence(xs, h0, c0, kernel, rk, bias)
  >>> hs.shape, c.shape
  ((5, 2, 4), (2, 4))
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax


def _forward(xs, h0, c0, kernel, rk, bias, mask, unroll):
    """The loop; returns carried states ``hs``, ``cs`` and the backward pass's residuals."""
    u = rk.shape[0]
    # One product per step: [x_t, h] @ [kernel; recurrent_kernel].
    wu = jnp.concatenate([kernel, rk.astype(kernel.dtype)], axis=0)
    dt = jnp.promote_types(xs.dtype, h0.dtype)  # as x_t @ kernel + h @ recurrent_kernel

    def step(carry, inputs):
        h, c = carry
        xt, mt = inputs
        xh = jnp.concatenate([xt.astype(dt), h.astype(dt)], axis=-1)
        gates = jnp.dot(xh, wu)
        gates = gates if bias is None else gates + bias
        i = jax.nn.sigmoid(gates[:, :u])
        f = jax.nn.sigmoid(gates[:, u : 2 * u])
        g = jnp.tanh(gates[:, 2 * u : 3 * u])
        o = jax.nn.sigmoid(gates[:, 3 * u :])
        c_new = f * c + i * g
        tc = jnp.tanh(c_new)
        h_new = o * tc
        if mt is not None:
            h_new, c_new = jnp.where(mt, h_new, h), jnp.where(mt, c_new, c)
        # Separate (T, B, U) stacks, not one (T, B, 4U): see the module docstring.
        return (h_new, c_new), (h_new, c_new, xh, (i, f, g, o), tc)

    (_, c_last), (hs, cs, xhs, acts, tcs) = lax.scan(step, (h0, c0), (xs, mask), unroll=unroll)
    return hs, c_last, (cs, xhs, acts, tcs)


@partial(jax.custom_vjp, nondiff_argnums=(7,))
def lstm_sequence(xs, h0, c0, kernel, rk, bias, mask=None, unroll=1):
    """LSTM over time-major ``xs`` (T, B, F); returns ``(hs (T, B, U), c_T (B, U))``.

    ``hs`` are the carried hidden states (a masked step repeats the previous
    one); ``hs[-1]`` is the final ``h``. ``bias`` (4U,) or None; ``mask``
    (T, B, 1) bool or None (True = valid step); ``unroll`` is `lax.scan`'s.
    Gradients flow to everything but ``mask``.
    """
    hs, c_last, _ = _forward(xs, h0, c0, kernel, rk, bias, mask, unroll)
    return hs, c_last


def _fwd(xs, h0, c0, kernel, rk, bias, mask, unroll):
    hs, c_last, (cs, xhs, acts, tcs) = _forward(xs, h0, c0, kernel, rk, bias, mask, unroll)
    return (hs, c_last), (xs, h0, c0, kernel, rk, bias, mask, cs, xhs, acts, tcs)


def _bwd(unroll, res, cotangents):
    xs, h0, c0, kernel, rk, bias, mask, cs, xhs, acts, tcs = res
    dhs, dc_last = cotangents
    n_in = kernel.shape[0]
    c_prev = jnp.concatenate([c0[None], cs[:-1]], axis=0)
    wu_t = jnp.concatenate([kernel, rk.astype(kernel.dtype)], axis=0).T

    # Weight gradients add up over T steps: at least float32 (the weights may be half precision).
    acc = jnp.promote_types(rk.dtype, jnp.float32)

    def step(carry, inputs):
        dh_next, dc, d_wu, d_bias = carry
        dh_t, (i, f, g, o), tc, cp, xh, mt = inputs
        dh = dh_next + dh_t  # this step's carried h feeds both step t+1 and hs[t]
        dh_pass = dc_pass = None
        if mt is not None:
            # A masked step copied its input state: the gradient passes straight through.
            dh, dh_pass = jnp.where(mt, dh, 0), jnp.where(mt, 0, dh)
            dc, dc_pass = jnp.where(mt, dc, 0), jnp.where(mt, 0, dc)
        dc = dc + dh * o * (1 - tc * tc)
        dgates = jnp.concatenate(
            [
                dc * g * i * (1 - i),
                dc * cp * f * (1 - f),
                dc * i * (1 - g * g),
                dh * tc * o * (1 - o),
            ],
            axis=-1,
        )
        # One product each for [dx_t, dh_{t-1}] and for the [kernel; recurrent_kernel] gradient.
        dxh = jnp.dot(dgates, wu_t)
        dh_prev, dc_prev = dxh[:, n_in:], dc * f
        if mt is not None:
            dh_prev, dc_prev = dh_prev + dh_pass, dc_prev + dc_pass
        d_wu = d_wu + jnp.dot(xh.T, dgates, preferred_element_type=acc)
        d_bias = d_bias + dgates.sum(axis=0, dtype=acc)
        return (dh_prev, dc_prev, d_wu, d_bias), dxh[:, :n_in]

    d_wu0 = jnp.zeros((n_in + rk.shape[0], rk.shape[1]), acc)
    init = (jnp.zeros_like(dc_last), dc_last, d_wu0, jnp.zeros(rk.shape[1], acc))
    (dh0, dc0, d_wu, d_bias), dxs = lax.scan(
        step, init, (dhs, acts, tcs, c_prev, xhs, mask), reverse=True, unroll=unroll
    )
    d_bias = None if bias is None else d_bias.astype(bias.dtype)
    # Each cotangent in its primal's dtype: a float32 initial state with bfloat16
    # inputs makes the loop (and dgates) float32. JAX lets a mismatched dtype through
    # for now, as a "temporary exception" to its custom_vjp check.
    dxs, dh0, dc0 = dxs.astype(xs.dtype), dh0.astype(h0.dtype), dc0.astype(c0.dtype)
    d_kernel, d_rk = d_wu[:n_in].astype(kernel.dtype), d_wu[n_in:].astype(rk.dtype)
    return dxs, dh0, dc0, d_kernel, d_rk, d_bias, None


lstm_sequence.defvjp(_fwd, _bwd)
