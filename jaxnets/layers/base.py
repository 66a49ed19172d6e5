"""The base class every jaxnets layer derives from.

`Layer` adds the Keras-only ``input_shape`` and ``trainable`` fields. It is keyword-only, so
each subclass keeps its Keras positional order (``Dense(64, "relu")``) and
can still be written ``Dense(64, input_shape=(784,))`` as a Keras model's
first layer is. The math ignores it; the ``Sequential`` facade reads it to
know the shape to initialise with. ``name=`` is Flax's own field.

Example:
  >>> from jaxnets.layers import Dense
  >>> Dense(4, input_shape=(3,), name="fc").input_shape
  (3,)
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax


class Layer(nn.Module):
    """A Flax Linen module with the keyword-only Keras ``input_shape`` field.

    Subclass it as any Flax module; a ``train: bool = False`` argument of
    ``__call__`` receives the train/eval mode from ``Sequential``.

    Attributes:
      input_shape: keyword-only; one example's shape without the batch axis,
        read by ``Sequential`` to build from its first layer.
      trainable: keyword-only (Keras): False freezes the layer's parameters
        when a `jaxnets.keras.Model` is compiled (set it, then ``compile``, as in
        Keras), counts them as non-trainable in ``summary``, and runs a
        ``BatchNormalization`` in inference mode. The math ignores it.

    Example:
      >>> import flax.linen as nn, jax.numpy as jnp
      >>> from jaxnets.layers import Layer
      >>> class Scale(Layer):
      ...     factor: float = 2.0
      ...     @nn.compact
      ...     def __call__(self, x, train: bool = False):
      ...         return x * self.factor
      >>> layer = Scale(3.0, input_shape=(2,))
      >>> layer.input_shape, layer.apply({}, jnp.array([[1.0, 2.0]])).tolist()
      ((2,), [[3.0, 6.0]])
    """

    input_shape: tuple[int, ...] | None = dataclasses.field(default=None, kw_only=True)
    trainable: bool = dataclasses.field(default=True, kw_only=True)


def float_inputs(x):
    """``x`` itself if it is floating point, else ``x`` as float32 (Keras casts inputs so).

    Layers cast their kernels to the input's dtype (bfloat16 inputs compute in
    bfloat16); integer or bool features would truncate every kernel to zero.

    Example:
      >>> import jax.numpy as jnp
      >>> float_inputs(jnp.array([1, 2], jnp.uint8)).dtype, float_inputs(jnp.ones(2, jnp.bfloat16)).dtype
      (dtype('float32'), dtype(bfloat16))
    """
    import jax.numpy as jnp

    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def resolve_impl(impl: str) -> str:
    """Maps ``impl`` ('auto', 'im2col', 'xla') to the implementation to run.

    'auto' picks the im2col / reshape kernels on CPU, where XLA's convolutions
    and max-pool gradients are slow, and XLA's own ops on GPU and TPU, where
    they are fast. It is resolved at trace time, so one module definition runs
    well on either backend.
    """
    from jaxnets.errors import lookup

    lookup(impl, {"auto": 0, "im2col": 1, "xla": 2}, kind="impl")
    impl = impl.lower()
    if impl == "auto":
        return "im2col" if jax.default_backend() == "cpu" else "xla"
    return impl


def as_tuple(value, n: int, what: str) -> tuple[int, ...]:
    """Expands an int to an ``n``-tuple, as Keras does for kernel sizes and strides."""
    from jaxnets.errors import ConfigError

    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ConfigError(f"{what} must be an int or a {n}-tuple, got {value!r}.")
    return value
