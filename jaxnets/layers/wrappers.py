"""Layer wrappers: each runs a layer it is given in a new way (Keras ``layers`` wrappers).

`TimeDistributed` applies a layer to every time step; `Bidirectional` runs a
recurrent layer forwards and a copy backwards and merges the two.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxnets.layers import Dense, TimeDistributed
  >>> layer = TimeDistributed(Dense(4))
  >>> x = jnp.ones((2, 5, 3))
  >>> variables = layer.init(jax.random.key(0), x)
  >>> layer.apply(variables, x).shape, variables["params"]["layer"]["kernel"].shape
  ((2, 5, 4), (3, 4))
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnets.errors import ShapeError, lookup
from jaxnets.layers.base import Layer


class TimeDistributed(Layer):
    """Applies ``layer`` to each slice ``x[:, t]`` with one set of parameters.

    The batch and time axes are merged into one, ``(B * T, ...)``, for one call of
    ``layer``, and split again afterwards: the same numbers as Keras's per-step loop
    (a ``BatchNormalization`` inside takes its statistics over all ``B * T`` rows, as
    in Keras). ``layer``'s parameters live under ``layer``. A sequence ``mask`` is
    accepted and left to the layers after this one (Keras passes it through too).

    Attributes:
      layer: any layer (a Flax module) that takes one step's ``(batch, ...)`` input.
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(T, H, W, C)``; only `Sequential` reads it. Default None.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.layers import Conv2D, TimeDistributed
      >>> frames = jnp.ones((2, 4, 8, 8, 1))  # (B, T, H, W, C)
      >>> layer = TimeDistributed(Conv2D(3, 3))
      >>> layer.apply(layer.init(jax.random.key(0), frames), frames).shape
      (2, 4, 6, 6, 3)
    """

    layer: Any

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        if x.ndim < 3:
            raise ShapeError(
                f"TimeDistributed expects inputs of rank >= 3 (batch, time, ...), got shape {x.shape}."
            )
        b, t = x.shape[:2]
        # Imported here: jaxnets.layers stays importable without the training stack.
        from jaxnets.training.state import accepted_call_kwargs, mode_kwargs

        # A module field is bound as the submodule named after it: parameters under "layer".
        kwargs = mode_kwargs(accepted_call_kwargs(self.layer), train)
        y = self.layer(x.reshape(b * t, *x.shape[2:]), **kwargs)
        return jax.tree.map(lambda a: a.reshape(b, t, *a.shape[1:]), y)


_MERGES = {
    "concat": lambda a, b: jnp.concatenate([a, b], axis=-1),
    "sum": lambda a, b: a + b,
    "ave": lambda a, b: (a + b) / 2,
    "mul": lambda a, b: a * b,
}


class Bidirectional(Layer):
    """Runs ``layer`` forwards and a copy backwards and merges (Keras ``Bidirectional``).

    The backward copy has ``go_backwards`` flipped and its own parameters
    (under ``backward``; the forward ones under ``forward``). Its sequence
    output is flipped back so step t of both directions lines up. As in
    Keras, both directions run with ``zero_output_for_mask=True``: masked
    steps output zeros.

    Attributes:
      layer: a `SimpleRNN`, `LSTM` or `GRU`.
      merge_mode: 'concat', 'sum', 'ave', 'mul', or None for ``(fwd, bwd)``.
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(T, F)``; only `Sequential` reads it, to build from its first layer. Default None.

    With ``return_state`` the result is ``(merged, *fwd_states, *bwd_states)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.layers import GRU, Bidirectional
      >>> x = jnp.ones((2, 5, 3))
      >>> layer = Bidirectional(GRU(4, return_sequences=True))
      >>> layer.apply(layer.init(jax.random.key(0), x), x).shape
      (2, 5, 8)
    """

    layer: Any
    merge_mode: str | None = "concat"

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None, initial_state=None):
        merge = (
            None if self.merge_mode is None else lookup(self.merge_mode, _MERGES, kind="merge_mode")
        )
        # As Keras' Bidirectional: masked steps output zeros in both directions.
        fwd_layer = self.layer.clone(parent=self, name="forward", zero_output_for_mask=True)
        bwd_layer = self.layer.clone(
            parent=self,
            name="backward",
            go_backwards=not self.layer.go_backwards,
            zero_output_for_mask=True,
        )
        n = self.layer.n_states
        fs = bs = None
        if initial_state is not None:
            fs, bs = initial_state[:n], initial_state[n:]
        fwd = fwd_layer(x, train=train, mask=mask, initial_state=fs)
        bwd = bwd_layer(x, train=train, mask=mask, initial_state=bs)
        states = ()
        if self.layer.return_state:
            (fwd, *f_states), (bwd, *b_states) = fwd, bwd
            states = (*f_states, *b_states)
        if self.layer.return_sequences:
            bwd = bwd[:, ::-1]
        out = (fwd, bwd) if merge is None else merge(fwd, bwd)
        return (out, *states) if self.layer.return_state else out
