"""`TimeDistributed`: applies a layer to every time step (Keras ``TimeDistributed``).

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

from jaxnets.errors import ShapeError
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
