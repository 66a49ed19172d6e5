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
import numbers

import flax.linen as nn
import jax

from jaxnets import regularizers


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

    def __post_init__(self):
        # A bad `*_regularizer` is a ConfigError here, not an error while tracing the step.
        for f in dataclasses.fields(self):
            if f.name.endswith("_regularizer"):
                regularizers.get(getattr(self, f.name))
        super().__post_init__()


def regularizer_field():
    """A keyword-only Keras ``*_regularizer`` field (default None); see `jaxnets.regularizers`."""
    return dataclasses.field(default=None, kw_only=True)


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
    """Expands an int to an ``n``-tuple of positive ints, as Keras does for kernel sizes and strides.

    Example:
      >>> as_tuple(3, 2, "kernel_size"), as_tuple((2, 1), 2, "strides")
      ((3, 3), (2, 1))
      >>> as_tuple(0, 2, "strides")
      Traceback (most recent call last):
      ...
      jaxnets.errors.ConfigError: strides must be positive, got (0, 0).
    """
    from jaxnets.errors import ConfigError

    if isinstance(value, int):
        value = (value,) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ConfigError(f"{what} must be an int or a {n}-tuple, got {value!r}.")
    if min(value) < 1:
        raise ConfigError(f"{what} must be positive, got {value!r}.")
    return value


def check_positive(layer: str, **values) -> None:
    """Raises a `ConfigError` if an int field of ``layer`` (``units=0``...) is not positive.

    Example:
      >>> check_positive("Dense", units=4)
      >>> check_positive("Dense", units=0)
      Traceback (most recent call last):
      ...
      jaxnets.errors.ConfigError: Dense units must be a positive integer, got 0.
    """
    from jaxnets.errors import ConfigError

    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ConfigError(f"{layer} {name} must be a positive integer, got {value!r}.")


def check_spatial_rank(layer: str, shape, rank: int) -> None:
    """Raises a `ShapeError` naming ``layer`` unless ``shape`` has ``rank`` spatial dims.

    The input check of the convolution, pooling and spatial dropout layers: inputs
    are (batch, ``rank`` spatial dims, channels).

    Example:
      >>> check_spatial_rank("MaxPooling2D", (8, 28, 28, 3), 2)  # fits: returns None
      >>> check_spatial_rank("MaxPooling2D", (8, 28, 3), 2)
      Traceback (most recent call last):
      ...
      jaxnets.errors.ShapeError: MaxPooling2D expects inputs of rank 4 (batch, 2 spatial dims, channels), got shape (8, 28, 3).
    """
    from jaxnets.errors import ShapeError

    if len(shape) != rank + 2:
        raise ShapeError(
            f"{layer} expects inputs of rank {rank + 2} "
            f"(batch, {rank} spatial dims, channels), got shape {tuple(shape)}."
        )


def feature_axes(axis, ndim: int, layer: str) -> tuple[int, ...]:
    """``axis`` (an int or ints, negative counting from the end) as sorted axes of an ``ndim`` input.

    Raises a `ShapeError` naming ``layer`` for an axis the input does not have (Keras
    raises too; wrapping it around would normalize over the wrong axis).

    Example:
      >>> feature_axes(-1, 4, "LayerNormalization"), feature_axes((1, -1), 3, "LayerNormalization")
      ((3,), (1, 2))
      >>> feature_axes(3, 2, "BatchNormalization")
      Traceback (most recent call last):
      ...
      jaxnets.errors.ShapeError: BatchNormalization axis 3 is out of range for inputs of rank 2 (axes -2 to 1).
    """
    from jaxnets.errors import ShapeError

    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for a in axes:
        if not -ndim <= a < ndim:
            raise ShapeError(
                f"{layer} axis {a} is out of range for inputs of rank {ndim} "
                f"(axes {-ndim} to {ndim - 1})."
            )
    return tuple(sorted(a % ndim for a in axes))
