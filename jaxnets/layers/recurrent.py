"""SimpleRNN, LSTM and GRU with Keras equations and parameters.

With ``hoist_input=True`` a layer projects the inputs of every time step
at once, one ``(T*B, F) @ (F, gates*units)`` product before the loop, so the
`lax.scan` body keeps only the recurrent ``(B, units) @ (units, gates*units)``
product. ``hoist_input=None`` (default) hoists on GPU/TPU but not on CPU,
where the hoisted LSTM training step stayed slower (its extra (T, B, 4U)
buffers cost more than T small products; see ``benchmarks/bench_layers.py``).
The hoisted projection is kept as one (T, B, U) stack per gate: XLA:CPU does
not vectorise an elementwise fusion that slices a gate out of a per-step
dynamic slice of a (T, B, 4U) stack, which made the hoisted loop 2x slower.
Parameters are the same either way. ``unroll`` is `lax.scan`'s unroll factor
(True unrolls fully).

`LSTM` with the default activations runs on CPU as one whole-sequence op with
a hand-written backward pass (`jaxnets.layers.lstm_fused`, ``fused=None``);
without a mask, in float32, with the ``onednn`` extra and a C++ compiler, that
op is oneDNN's LSTM primitive instead (`jaxnets.layers.lstm_onednn`).

Masking (``mask`` (B, T), True = valid step): a masked step leaves the carry
unchanged, so with right-padded sequences the final state and the last output
are those of the last valid step, and ``go_backwards`` effectively starts at
each sequence's own end. With ``return_sequences`` a masked step outputs, as
Keras' default ``zero_output_for_mask=False``, the carried ``h``: the last
valid step's output (the initial ``h`` before the first valid step); with
``zero_output_for_mask=True`` (what `Bidirectional` sets) it outputs zeros.

Dropout (Keras' ``dropout`` and ``recurrent_dropout``, train mode only): each
call draws keep masks from the ``'dropout'`` RNG, one per sequence (batch
row) reused at every time step; a kept value is scaled by ``1 / (1 - rate)``.
As Keras 3 does by default: with ``recurrent_dropout=0`` one (B, F) mask drops
the inputs of all gates; with ``recurrent_dropout > 0`` (where Keras switches
LSTM and GRU to its ``implementation=1``) each gate gets its own (B, F) input
mask and its own (B, units) mask on the state ``h`` entering its recurrent
product (`SimpleRNN`: one of each). The masks are random, so values match
Keras only in distribution; eval mode is unchanged.

Parameters have Keras' names and gate order: ``kernel`` (F, G*U),
``recurrent_kernel`` (U, G*U), ``bias``; LSTM gates i, f, c, o; GRU z, r, h.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxnets.layers import LSTM
  >>> x = jnp.ones((2, 5, 3))
  >>> layer = LSTM(4, return_sequences=True)
  >>> variables = layer.init(jax.random.key(0), x)
  >>> layer.apply(variables, x).shape
  (2, 5, 4)
  >>> variables["params"]["recurrent_kernel"].shape
  (4, 16)

`Bidirectional` lives with the other layer wrappers in
`jaxnets.layers.wrappers`; this module re-exports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxnets import regularizers
from jaxnets.errors import ConfigError, ShapeError
from jaxnets.layers import activations, initializers, lstm_onednn
from jaxnets.layers.base import Layer, float_inputs, regularizer_field
from jaxnets.layers.lstm_fused import lstm_sequence
from jaxnets.layers.replicas import REPLICATED_RNG, replica_axis
from jaxnets.layers.wrappers import (  # noqa: F401  (re-exported: jaxnets.layers.recurrent.<name>)
    Bidirectional,
)


class _RNN(Layer):
    """Shared loop of the recurrent layers; subclasses define the cell."""

    gates: ClassVar[int] = 1
    n_states: ClassVar[int] = 1

    units: int
    activation: str | Callable | None = "tanh"
    use_bias: bool = True
    kernel_initializer: str | Callable = "glorot_uniform"
    recurrent_initializer: str | Callable = "orthogonal"
    bias_initializer: str | Callable = "zeros"
    return_sequences: bool = False
    return_state: bool = False
    go_backwards: bool = False
    unroll: int | bool = 1
    hoist_input: bool | None = None
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    zero_output_for_mask: bool = False
    kernel_regularizer: str | Callable | None = regularizer_field()
    recurrent_regularizer: str | Callable | None = regularizer_field()
    bias_regularizer: str | Callable | None = regularizer_field()

    def __post_init__(self):
        for name in ("dropout", "recurrent_dropout"):
            rate = getattr(self, name)
            if not 0.0 <= float(rate) < 1.0:
                what = "input features" if name == "dropout" else "state h"
                raise ConfigError(
                    f"{type(self).__name__} {name} must be in [0, 1), got {rate!r}; it is "
                    f"the fraction of the {what} set to zero in train mode."
                )
        super().__post_init__()

    def _bias(self):
        init = initializers.get(self.bias_initializer)
        return self.param("bias", init, (self.gates * self.units,))

    def _cell(self, carry, xg, rk, bias, rmasks) -> tuple[tuple, jax.Array]:
        """One time step from ``xg``, the input projection split per gate (``gates`` arrays).

        ``rmasks``: None, or one recurrent dropout mask per gate (see `_recurrent`).
        Each subclass (SimpleRNN, LSTM, GRU) defines its equations.
        """
        raise NotImplementedError(f"{type(self).__name__} must define _cell")  # abstract

    def _recurrent(self, h, rk, rmasks) -> list:
        """``h @ rk`` split into its ``rk.shape[1] // units`` gates.

        With recurrent dropout gate g reads ``h * rmasks[g]`` (Keras' implementation 1),
        one product per gate; ``rk`` may hold the first gates only (GRU), so the
        zip stops at the shorter.
        """
        n = rk.shape[-1] // self.units
        if rmasks is None:
            y = jnp.dot(h, rk)
            return [y] if n == 1 else jnp.split(y, n, axis=-1)
        return [jnp.dot(h * m, r) for m, r in zip(rmasks, jnp.split(rk, n, axis=-1))]

    def _dropout_masks(self, rate: float, n: int, shape, dtype) -> tuple:
        """``n`` masks of ``shape`` (B, D) for one call, each entry 0 or ``1 / (1 - rate)``.

        Drawn as `jaxnets.layers.Dropout` draws: from ``'dropout'``, or under
        `jaxnets.layers.replicas.split_over` this replica's rows of the global
        batch's masks from the replicated stream, so a pmap run gives the
        numbers of one device. (Dropout's injected ``dropout_rate`` is not
        read: these rates are the layer's own, as in Keras.)
        """
        keep_prob = 1.0 - rate
        axis, rows = replica_axis(), shape[0]
        if axis is not None and self.has_rng(REPLICATED_RNG):
            full = (n, rows * lax.axis_size(axis), *shape[1:])
            keep = jax.random.bernoulli(self.make_rng(REPLICATED_RNG), keep_prob, full)
            keep = lax.dynamic_slice_in_dim(keep, lax.axis_index(axis) * rows, rows, axis=1)
        else:
            keep = jax.random.bernoulli(self.make_rng("dropout"), keep_prob, (n, *shape))
        return tuple(jnp.where(keep, jnp.asarray(1.0 / keep_prob, dtype), jnp.zeros((), dtype)))

    def _fused(self, hoist: bool) -> bool:
        """Whether to run the whole-sequence op instead of the scan (LSTM overrides)."""
        return False

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None, initial_state=None):
        x = float_inputs(x)
        if x.ndim != 3:
            raise ShapeError(
                f"{type(self).__name__} expects (batch, time, features), got {x.shape}."
            )
        b, t, f = x.shape
        if mask is not None and mask.shape != (b, t):
            raise ShapeError(f"mask must have shape (batch, time) = {(b, t)}, got {mask.shape}.")
        gu = self.gates * self.units
        kernel = self.param("kernel", initializers.get(self.kernel_initializer), (f, gu))
        rk = self.param(
            "recurrent_kernel", initializers.get(self.recurrent_initializer), (self.units, gu)
        )
        bias = self._bias() if self.use_bias else None
        regularizers.add_penalty(self, "kernel", kernel, self.kernel_regularizer)
        regularizers.add_penalty(self, "recurrent", rk, self.recurrent_regularizer)
        if bias is not None:
            regularizers.add_penalty(self, "bias", bias, self.bias_regularizer)
        in_bias = None if bias is None else (bias if bias.ndim == 1 else bias[0]).astype(x.dtype)
        kernel = kernel.astype(x.dtype)
        # Dropout masks (module docstring): per gate once recurrent_dropout is on, as
        # Keras' implementation 1; else one input mask, applied to x itself.
        per_gate = train and self.recurrent_dropout > 0
        in_masks = rmasks = None
        if train and self.dropout > 0:
            n = self.gates if per_gate else 1
            in_masks = self._dropout_masks(self.dropout, n, (b, f), x.dtype)
            if n == 1:
                x, in_masks = x * in_masks[0][:, None, :], None
        if per_gate:
            shape = (b, self.units)
            rmasks = self._dropout_masks(self.recurrent_dropout, self.gates, shape, x.dtype)
        hoist = self.hoist_input
        if hoist is None:
            # Measured on XLA CPU (jax 0.10): even with per-gate stacks the
            # hoisted LSTM training step was slower than projecting inside the
            # loop (bench_layers.py), so hoist only on GPU/TPU, where one big
            # product beats T small ones.
            hoist = jax.default_backend() != "cpu"
        # The fused LSTM op has no per-step recurrent dropout (nor per-gate input
        # masks): with recurrent_dropout in train mode the layer runs the scan.
        fused = self._fused(hoist) and rmasks is None
        hoist = hoist and not fused  # the fused op projects inside its own loop

        def project(xt):
            """Inputs (..., F) to the per-gate projections (..., U), bias added."""
            lead = xt.shape[:-1]
            if in_masks is None:
                xp = jnp.dot(xt.reshape(-1, f), kernel).reshape(*lead, gu)
                xp = xp if in_bias is None else xp + in_bias
                return tuple(jnp.split(xp, self.gates, axis=-1))
            # Per-gate input masks: one product per gate.
            ks = jnp.split(kernel, self.gates, axis=-1)
            bs = [None] * self.gates if in_bias is None else jnp.split(in_bias, self.gates)
            out = []
            for m, k, bg in zip(in_masks, ks, bs, strict=True):
                y = jnp.dot((xt * m).reshape(-1, f), k).reshape(*lead, self.units)
                out.append(y if bg is None else y + bg)
            return tuple(out)

        xs = jnp.swapaxes(x, 0, 1)  # (T, B, F): time-major, the loop's layout
        if hoist:
            # Every step's x @ kernel in one product; the loop keeps h @ rk only.
            xs = project(xs)  # a (T, B, U) stack per gate
        ms = None if mask is None else jnp.swapaxes(mask.astype(bool), 0, 1)[..., None]
        if self.go_backwards:
            xs = jax.tree.map(lambda a: a[::-1], xs)
            ms = None if ms is None else ms[::-1]

        if initial_state is None:
            carry = tuple(jnp.zeros((b, self.units), x.dtype) for _ in range(self.n_states))
        else:
            carry = (
                (initial_state,)
                if self.n_states == 1 and not isinstance(initial_state, list | tuple)
                else tuple(initial_state)
            )
            if len(carry) != self.n_states:
                raise ShapeError(
                    f"{type(self).__name__} initial_state has {self.n_states} arrays, "
                    f"got {len(carry)}."
                )
        rk = rk.astype(x.dtype)

        def step(carry, inputs):
            xg, mt = inputs
            if not hoist:
                xg = project(xg)
            new, out = self._cell(carry, xg, rk, bias, rmasks)
            if mt is not None:
                new = tuple(jnp.where(mt, n, c) for n, c in zip(new, carry, strict=True))
                # Keras' zero_output_for_mask=False outputs the carried h (its RNN
                # loop's states[0]): the last valid output, or the initial h.
                held = jnp.zeros_like(out) if self.zero_output_for_mask else carry[0]
                out = jnp.where(mt, out, held)
            return new, out

        if fused:
            if lstm_onednn.usable(xs, *carry, kernel, rk, in_bias, ms):  # CPU, float32, no mask
                hs, c_last = lstm_onednn.lstm_sequence(xs, *carry, kernel, rk, in_bias)
            else:
                hs, c_last = lstm_sequence(xs, *carry, kernel, rk, in_bias, ms, self.unroll)
            carry = (hs[-1], c_last)
            # hs holds the carried h, which a masked step repeats: Keras' output
            # unless zero_output_for_mask, as in the scan.
            zero = ms is not None and self.zero_output_for_mask
            ys = jnp.where(ms, hs, jnp.zeros_like(hs)) if zero else hs
        else:
            carry, ys = lax.scan(step, carry, (xs, ms), unroll=self.unroll)
        # Output equals h, and masked steps hold h: the final h is the last valid output.
        out = jnp.swapaxes(ys, 0, 1) if self.return_sequences else carry[0]
        return (out, *carry) if self.return_state else out


class SimpleRNN(_RNN):
    """Fully connected recurrence ``h = activation(x W + h U + b)`` (Keras ``SimpleRNN``).

    ``__call__(x, train=False, mask=None, initial_state=None)``: x (B, T, F);
    returns ``(B, units)``, or ``(B, T, units)`` with ``return_sequences``;
    with ``return_state``, ``(output, h)``.

    Attributes:
      kernel_regularizer, recurrent_regularizer, bias_regularizer: keyword-only Keras weight penalties (None, 'l1', 'l2',
        `jaxnets.regularizers.L2(0.01)`...), added to the training loss once per step.
      units: state size.
      activation: Keras name or callable (default tanh).
      use_bias, kernel_initializer, recurrent_initializer, bias_initializer: as Keras.
        ``use_bias`` adds ``bias`` (units,); the initializers (Keras names or callables)
        create ``kernel`` (F, units) ('glorot_uniform'), ``recurrent_kernel``
        (units, units) ('orthogonal') and ``bias`` ('zeros').
      return_sequences: return every step's output instead of the last.
      return_state: also return the final state(s).
      go_backwards: read the sequence in reverse; outputs stay in that order.
      unroll: `lax.scan` unroll factor (int, or True for full unrolling).
      hoist_input: project all steps' inputs before the loop; None picks by
        backend (off on CPU, on elsewhere).
      dropout: fraction of the input features dropped in train mode, in [0, 1) (default 0):
        one (B, F) mask per call, the same at every step (module docstring).
      recurrent_dropout: fraction of the state ``h`` dropped before ``h @ recurrent_kernel``
        in train mode, in [0, 1) (default 0): one (B, units) mask per call.
      zero_output_for_mask: with ``return_sequences``, masked steps output zeros instead
        of repeating the carried ``h`` (default False, as Keras).
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(T, F)``; only `Sequential` reads it, to build from its first layer. Default None.

    Example:
      With one unit, a linear activation and all-ones kernels the state is
      ``h_t = x_t + h_{t-1}``, a running sum:

      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.layers import SimpleRNN
      >>> rnn = SimpleRNN(1, activation=None, kernel_initializer="ones",
      ...                 recurrent_initializer="ones", return_sequences=True)
      >>> x = jnp.array([[[1.0], [2.0], [3.0]]])  # (batch 1, time 3, features 1)
      >>> variables = rnn.init(jax.random.key(0), x)
      >>> rnn.apply(variables, x)[0, :, 0].tolist()
      [1.0, 3.0, 6.0]
      >>> jax.tree.map(jnp.shape, variables)
      {'params': {'bias': (1,), 'kernel': (1, 1), 'recurrent_kernel': (1, 1)}}

      A masked step keeps the state and, as in Keras, repeats the last output:

      >>> rnn.apply(variables, x, mask=jnp.array([[True, False, True]]))[0, :, 0].tolist()
      [1.0, 1.0, 4.0]

      ``dropout`` acts in train mode only, with one mask per sequence for all steps:

      >>> drop = rnn.clone(dropout=0.5)
      >>> drop.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)}).shape
      (1, 3, 1)
      >>> drop.apply(variables, x)[0, :, 0].tolist()  # eval mode: no dropout
      [1.0, 3.0, 6.0]
    """

    def _cell(self, carry, xg, rk, bias, rmasks):
        h = activations.get(self.activation)(xg[0] + self._recurrent(carry[0], rk, rmasks)[0])
        return (h,), h


class LSTM(_RNN):
    """Long short-term memory (Keras ``LSTM``: gates i, f, c, o).

    ``i, f, o = recurrent_activation(.)``, ``c = f*c + i*activation(.)``,
    ``h = o*activation(c)``. ``unit_forget_bias`` initialises the forget bias
    to 1 as Keras does. With ``return_state`` returns ``(output, h, c)``;
    ``initial_state`` is ``(h, c)``. ``fused``: run `lstm_fused.lstm_sequence`
    (hand-written backward pass; needs the default tanh/sigmoid activations
    and the projection in the loop); None picks it on CPU, where it trains
    faster than the scan (the benchmark LSTM: +40%), and keeps the scan
    elsewhere (not measured there). Other arguments as
    `SimpleRNN`.

    Attributes:
      kernel_regularizer, recurrent_regularizer, bias_regularizer: keyword-only Keras weight penalties (None, 'l1', 'l2',
        `jaxnets.regularizers.L2(0.01)`...), added to the training loss once per step.
      units: size of the states ``h`` and ``c`` and of each step's output.
      activation: Keras name or callable of the candidate and of ``c`` (default tanh).
      recurrent_activation: Keras name or callable of gates i, f, o (default sigmoid).
      use_bias: learn ``bias`` (4*units,) (default True).
      kernel_initializer: of ``kernel`` (F, 4*units); Keras name or callable ('glorot_uniform').
      recurrent_initializer: of ``recurrent_kernel`` (units, 4*units) (default 'orthogonal').
      bias_initializer: of ``bias`` (default 'zeros'; the forget part per ``unit_forget_bias``).
      unit_forget_bias: initialise the forget-gate bias to 1 (default True, as Keras).
      return_sequences: return every step's output ``(B, T, units)`` instead of the last.
      return_state: also return the final states: ``(output, h, c)``.
      go_backwards: read the sequence in reverse; outputs stay in that (reversed) order.
      unroll: `lax.scan` unroll factor (int, or True for full unrolling); default 1.
      hoist_input: project all steps' inputs before the loop; None picks by backend (off on
        CPU, on elsewhere); True cannot be combined with ``fused=True``.
      fused: run `lstm_fused.lstm_sequence` (True), the scan (False), or pick (None, default).
        With ``recurrent_dropout`` in train mode the scan runs either way.
      dropout: fraction of the input features dropped in train mode, in [0, 1) (default 0):
        one (B, F) mask per call for all four gates, or one per gate with
        ``recurrent_dropout`` (Keras; module docstring); the same at every step.
      recurrent_dropout: fraction of ``h`` dropped before each gate's recurrent product in
        train mode, in [0, 1) (default 0): one (B, units) mask per gate and call.
      zero_output_for_mask: with ``return_sequences``, masked steps output zeros instead
        of repeating the carried ``h`` (default False, as Keras).
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(T, F)``; only `Sequential` reads it, to build from its first layer. Default None.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.layers import LSTM
      >>> x = jnp.ones((2, 5, 3))  # (batch, time, features)
      >>> layer = LSTM(4, return_state=True)
      >>> variables = layer.init(jax.random.key(0), x)
      >>> jax.tree.map(jnp.shape, variables)  # gates i, f, c, o side by side
      {'params': {'bias': (16,), 'kernel': (3, 16), 'recurrent_kernel': (4, 16)}}
      >>> out, h, c = layer.apply(variables, x)  # the last step's output, then (h, c)
      >>> out.shape, c.shape, bool((out == h).all())
      ((2, 4), (2, 4), True)
      >>> variables["params"]["bias"][4:8].tolist()  # unit_forget_bias
      [1.0, 1.0, 1.0, 1.0]
    """

    gates: ClassVar[int] = 4
    n_states: ClassVar[int] = 2

    recurrent_activation: str | Callable | None = "sigmoid"
    unit_forget_bias: bool = True
    fused: bool | None = None

    def _fused(self, hoist):
        standard = (
            activations.get(self.activation) is jnp.tanh
            and activations.get(self.recurrent_activation) is jax.nn.sigmoid
        )
        if self.fused is None:
            return standard and not hoist and jax.default_backend() == "cpu"
        if self.fused and not standard:
            raise ConfigError(
                "LSTM(fused=True) needs activation='tanh' and recurrent_activation='sigmoid'; "
                "use fused=False for other activations."
            )
        if self.fused and self.hoist_input:
            raise ConfigError("LSTM(fused=True) projects inside its loop; drop hoist_input=True.")
        return self.fused

    def _bias(self):
        base = initializers.get(self.bias_initializer)
        u = self.units

        def init(key, shape, dtype=jnp.float32):
            b = base(key, shape, dtype)
            return b.at[u : 2 * u].set(1.0) if self.unit_forget_bias else b

        return self.param("bias", init, (4 * u,))

    def _cell(self, carry, xg, rk, bias, rmasks):
        h, c = carry
        act = activations.get(self.activation)
        ract = activations.get(self.recurrent_activation)
        i, f, g, o = (a + r for a, r in zip(xg, self._recurrent(h, rk, rmasks), strict=True))
        c = ract(f) * c + ract(i) * act(g)
        h = ract(o) * act(c)
        return (h, c), h


class GRU(_RNN):
    """Gated recurrent unit (Keras ``GRU``: gates z, r, h).

    ``reset_after=True`` (Keras' default, cuDNN-compatible) applies the reset
    gate after the recurrent product and keeps separate input and recurrent
    biases, ``bias`` of shape (2, 3*units); ``reset_after=False`` is the
    original GRU with ``bias`` (3*units). ``h = z*h + (1 - z)*hh``. With
    ``return_state`` returns ``(output, h)``. Other arguments as `SimpleRNN`.

    Attributes:
      kernel_regularizer, recurrent_regularizer, bias_regularizer: keyword-only Keras weight penalties (None, 'l1', 'l2',
        `jaxnets.regularizers.L2(0.01)`...), added to the training loss once per step.
      units: size of the state ``h`` and of each step's output.
      activation: Keras name or callable of the candidate ``hh`` (default tanh).
      recurrent_activation: Keras name or callable of gates z and r (default sigmoid).
      use_bias: learn ``bias``, (2, 3*units) with ``reset_after``, else (3*units,) (default True).
      kernel_initializer: of ``kernel`` (F, 3*units); Keras name or callable ('glorot_uniform').
      recurrent_initializer: of ``recurrent_kernel`` (units, 3*units) (default 'orthogonal').
      bias_initializer: of ``bias`` (default 'zeros').
      reset_after: apply the reset gate after the recurrent product (default True, Keras').
      return_sequences: return every step's output ``(B, T, units)`` instead of the last.
      return_state: also return the final state: ``(output, h)``.
      go_backwards: read the sequence in reverse; outputs stay in that (reversed) order.
      unroll: `lax.scan` unroll factor (int, or True for full unrolling); default 1.
      hoist_input: project all steps' inputs before the loop; None picks by backend (off on
        CPU, on elsewhere).
      dropout: fraction of the input features dropped in train mode, in [0, 1) (default 0):
        one (B, F) mask per call for all three gates, or one per gate with
        ``recurrent_dropout`` (Keras; module docstring); the same at every step.
      recurrent_dropout: fraction of ``h`` dropped in train mode, in [0, 1) (default 0): one
        (B, units) mask per gate and call, on the ``h`` entering the z and r products and the
        candidate's (``r * h`` with ``reset_after=False``).
      zero_output_for_mask: with ``return_sequences``, masked steps output zeros instead
        of repeating the carried ``h`` (default False, as Keras).
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(T, F)``; only `Sequential` reads it, to build from its first layer. Default None.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.layers import GRU
      >>> x = jnp.ones((2, 5, 3))  # (batch, time, features)
      >>> layer = GRU(4, return_sequences=True)
      >>> variables = layer.init(jax.random.key(0), x)
      >>> jax.tree.map(jnp.shape, variables)  # reset_after: input and recurrent biases
      {'params': {'bias': (2, 12), 'kernel': (3, 12), 'recurrent_kernel': (4, 12)}}
      >>> layer.apply(variables, x).shape
      (2, 5, 4)
    """

    gates: ClassVar[int] = 3

    recurrent_activation: str | Callable | None = "sigmoid"
    reset_after: bool = True

    def _bias(self):
        init = initializers.get(self.bias_initializer)
        shape = (2, 3 * self.units) if self.reset_after else (3 * self.units,)
        return self.param("bias", init, shape)

    def _cell(self, carry, xg, rk, bias, rmasks):
        (h,) = carry
        u = self.units
        act = activations.get(self.activation)
        ract = activations.get(self.recurrent_activation)
        xz, xr, xh = xg
        if self.reset_after:
            if rmasks is None:
                inner = jnp.dot(h, rk)
                if bias is not None:
                    inner = inner + bias[1].astype(inner.dtype)
                hz, hr, hh = jnp.split(inner, 3, axis=-1)
            else:
                hz, hr, hh = self._recurrent(h, rk, rmasks)
                if bias is not None:
                    rb = jnp.split(bias[1].astype(hz.dtype), 3)
                    hz, hr, hh = hz + rb[0], hr + rb[1], hh + rb[2]
            z, r = ract(xz + hz), ract(xr + hr)
            cand = act(xh + r * hh)
        else:
            hz, hr = self._recurrent(h, rk[:, : 2 * u], rmasks)
            z, r = ract(xz + hz), ract(xr + hr)
            # Keras' implementation 1 drops the state entering the candidate with its own mask.
            h_cand = h if rmasks is None else h * rmasks[2]
            cand = act(xh + jnp.dot(r * h_cand, rk[:, 2 * u :]))
        h = z * h + (1.0 - z) * cand
        return (h,), h
