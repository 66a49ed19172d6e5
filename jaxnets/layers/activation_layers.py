"""Activation layers: Activation (by Keras name), ReLU, LeakyReLU, Softmax.

Example:
  >>> import jax.numpy as jnp
  >>> from jaxnets.layers import LeakyReLU
  >>> LeakyReLU().apply({}, jnp.array([-1.0, 2.0])).tolist()  # Keras 3's slope 0.3
  [-0.3..., 2.0]
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnets.errors import ConfigError
from jaxnets.layers import activations
from jaxnets.layers.base import Layer, float_inputs


class Activation(Layer):
    """Applies an activation by Keras name (``Activation("relu")``) or callable.

    Attributes:
      activation: Keras name (see `jaxnets.layers.activations`), a callable applied
        elementwise, or None (the identity).
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(16,)``; only `Sequential` reads it, to build from its first layer. Default None.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.layers import Activation
      >>> Activation("relu").apply({}, jnp.array([-1.0, 2.0])).tolist()
      [0.0, 2.0]
    """

    activation: str | Callable | None

    @nn.compact
    def __call__(self, x, train: bool = False):
        return activations.get(self.activation)(x)


class ReLU(Layer):
    """``max(x, 0)`` with Keras ``ReLU``'s options (Keras 3 ``keras.layers.ReLU``).

    ``x`` above ``threshold`` passes (capped at ``max_value``); below,
    ``negative_slope * (x - threshold)``.

    Attributes:
      max_value: cap on the output; None (default) is no cap.
      negative_slope: slope below the threshold (default 0).
      threshold: where the slope changes (default 0).
      input_shape: keyword-only (Keras): one example's shape without the batch axis;
        only `Sequential` reads it. Default None.

    Example:
      >>> import jax.numpy as jnp
      >>> ReLU(max_value=6.0, negative_slope=0.1, threshold=1.0).apply(
      ...     {}, jnp.array([-2.0, 1.0, 1.5, 7.0])).round(3).tolist()
      [-0.3, 0.0, 1.5, 6.0]
    """

    max_value: float | None = None
    negative_slope: float = 0.0
    threshold: float = 0.0

    def __post_init__(self):
        if self.max_value is not None and self.max_value < 0:
            raise ConfigError(f"ReLU max_value must be >= 0, got {self.max_value!r}.")
        if self.negative_slope < 0 or self.threshold < 0:  # Keras rejects both too
            raise ConfigError(
                "ReLU negative_slope and threshold must be >= 0, got "
                f"{self.negative_slope!r} and {self.threshold!r}."
            )
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = float_inputs(x)
        y = jnp.where(x > self.threshold, x, self.negative_slope * (x - self.threshold))
        return y if self.max_value is None else jnp.minimum(y, self.max_value)


class LeakyReLU(Layer):
    """``x`` if positive, else ``negative_slope * x`` (Keras ``LeakyReLU``).

    Note the defaults: the layer's slope is 0.3 (Keras 3), the activation
    ``"leaky_relu"``'s 0.2.

    Attributes:
      negative_slope: slope for negative inputs (default 0.3).
      alpha: Keras 2's name for ``negative_slope``; when set it wins (default None).
      input_shape: keyword-only (Keras): one example's shape without the batch axis;
        only `Sequential` reads it. Default None.

    Example:
      >>> import jax.numpy as jnp
      >>> LeakyReLU().apply({}, jnp.array([-1.0, 2.0])).round(3).tolist()
      [-0.3, 2.0]
      >>> LeakyReLU(alpha=0.2).apply({}, jnp.array([-1.0])).round(3).tolist()
      [-0.2]
    """

    negative_slope: float = 0.3
    alpha: float | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        slope = self.negative_slope if self.alpha is None else self.alpha
        return jax.nn.leaky_relu(float_inputs(x), negative_slope=slope)


class Softmax(Layer):
    """Softmax over ``axis`` (Keras ``Softmax``).

    Attributes:
      axis: the axis (or axes) normalized over; default the last.
      input_shape: keyword-only (Keras): one example's shape without the batch axis;
        only `Sequential` reads it. Default None.

    Example:
      >>> import jax.numpy as jnp
      >>> Softmax().apply({}, jnp.array([[0.0, 0.0]])).tolist()
      [[0.5, 0.5]]
    """

    axis: int | tuple[int, ...] = -1

    @nn.compact
    def __call__(self, x, train: bool = False):
        return jax.nn.softmax(float_inputs(x), axis=self.axis)
