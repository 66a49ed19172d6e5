"""A whole-sequence LSTM with a hand-written backward pass (``custom_vjp``).

`lstm_sequence` runs the Keras LSTM (gates i, f, c, o; sigmoid and tanh) over
all time steps and gives the same values as differentiating the per-step
`lax.scan` of `jaxnets.layers.LSTM`, with a backward pass written for XLA:CPU:

* the reverse loop computes the gate gradients ``dgates_t`` (B, 4U),
  ``dh_{t-1} = dgates_t @ recurrent_kernel.T`` and ``dx_t = dgates_t @ kernel.T``,
  and adds ``h_{t-1}.T @ dgates_t`` and ``x_t.T @ dgates_t`` to weight
  gradients carried in float32;
* it stores no (T, B, 4U) stack of gate gradients. Stacking them for one
  product per weight after the loop was 14% slower on the benchmark LSTM
  (XLA:CPU zero-fills such a scan output and writes it step by step, which
  cost more than T small products; jax 0.10, 2 cores).

The forward loop stores the activated gates, ``tanh(c)`` and the carried
states, so the backward loop needs no transcendental function: on XLA:CPU an
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

    def step(carry, inputs):
        h, c = carry
        xt, mt = inputs
        # Same operation order as `LSTM._cell` with the projection inside the loop,
        # so values match it bit for bit: (x W + b) + h U.
        gates = jnp.dot(xt, kernel)
        gates = gates if bias is None else gates + bias
        gates = gates + jnp.dot(h, rk)
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
        return (h_new, c_new), (h_new, c_new, (i, f, g, o), tc)

    (_, c_last), (hs, cs, acts, tcs) = lax.scan(step, (h0, c0), (xs, mask), unroll=unroll)
    return hs, c_last, (cs, acts, tcs)


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
    hs, c_last, (cs, acts, tcs) = _forward(xs, h0, c0, kernel, rk, bias, mask, unroll)
    return (hs, c_last), (xs, h0, c0, kernel, rk, bias, mask, hs, cs, acts, tcs)


def _bwd(unroll, res, cotangents):
    xs, h0, c0, kernel, rk, bias, mask, hs, cs, acts, tcs = res
    dhs, dc_last = cotangents
    c_prev = jnp.concatenate([c0[None], cs[:-1]], axis=0)
    h_prev = jnp.concatenate([h0[None], hs[:-1]], axis=0)
    rk_t, kernel_t = rk.T, kernel.T

    # Weight gradients add up over T steps: at least float32 (the weights may be half precision).
    acc = jnp.promote_types(rk.dtype, jnp.float32)

    def outer(a, b):  # a.T @ b
        return jnp.dot(a.T, b, preferred_element_type=acc)

    def step(carry, inputs):
        dh_next, dc, d_rk, d_kernel, d_bias = carry
        dh_t, (i, f, g, o), tc, cp, hp, xt, mt = inputs
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
        dh_prev = jnp.dot(dgates, rk_t)
        dc_prev = dc * f
        if mt is not None:
            dh_prev, dc_prev = dh_prev + dh_pass, dc_prev + dc_pass
        d_rk, d_kernel = d_rk + outer(hp, dgates), d_kernel + outer(xt, dgates)
        d_bias = d_bias + dgates.sum(axis=0, dtype=acc)
        return (dh_prev, dc_prev, d_rk, d_kernel, d_bias), jnp.dot(dgates, kernel_t)

    zeros = lambda a: jnp.zeros(a.shape, acc)  # noqa: E731
    init = (jnp.zeros_like(dc_last), dc_last, zeros(rk), zeros(kernel), zeros(rk[0]))
    (dh0, dc0, d_rk, d_kernel, d_bias), dxs = lax.scan(
        step, init, (dhs, acts, tcs, c_prev, h_prev, xs, mask), reverse=True, unroll=unroll
    )
    d_bias = None if bias is None else d_bias.astype(bias.dtype)
    # Each cotangent in its primal's dtype: a float32 initial state with bfloat16
    # inputs makes the loop (and dgates) float32. JAX lets a mismatched dtype through
    # for now, as a "temporary exception" to its custom_vjp check.
    dxs, dh0, dc0 = dxs.astype(xs.dtype), dh0.astype(h0.dtype), dc0.astype(c0.dtype)
    return dxs, dh0, dc0, d_kernel.astype(kernel.dtype), d_rk.astype(rk.dtype), d_bias, None


lstm_sequence.defvjp(_fwd, _bwd)
