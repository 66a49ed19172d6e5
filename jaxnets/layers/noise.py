"""Layers active in training only: Dropout, SpatialDropout1D/2D, GaussianNoise.

Each draws from the ``'dropout'`` RNG in train mode and is the identity in
inference mode, as in Keras.

Example:
  >>> import jax.numpy as jnp
  >>> from jaxnets.layers import Dropout
  >>> Dropout(0.5).apply({}, jnp.ones(3)).tolist()  # inference: the identity
  [1.0, 1.0, 1.0]
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxnets.errors import ConfigError, ShapeError
from jaxnets.layers import hyperparams
from jaxnets.layers.base import Layer, check_spatial_rank, float_inputs
from jaxnets.layers.replicas import REPLICATED_RNG, replica_axis


class Dropout(Layer):
    """Zeroes a ``rate`` fraction of inputs in train mode and rescales the rest.

    Draws from the ``'dropout'`` RNG; eval mode is the identity. Inside
    `jaxnets.layers.hyperparams.inject` an injected ``dropout_rate`` (an
    array: one per population member) replaces ``rate``.

    Attributes:
      rate: fraction of inputs set to zero in train mode, in [0, 1); the kept ones are
        scaled by ``1 / (1 - rate)``.
      noise_shape: shape of the keep mask, broadcast against the input (e.g. ``(B, 1, C)``
        drops the same channels at every step); as in Keras, a None entry takes the
        input's size (``(None, 1, C)``), and each entry is None, 1 or that size.
        None (default) is the input's shape.
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(128,)``; only `Sequential` reads it, to build from its first layer. Default None.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> y = Dropout(0.5).apply({}, jnp.ones((1000,)), train=True,
      ...                        rngs={"dropout": jax.random.key(0)})
      >>> sorted(set(y.tolist()))
      [0.0, 2.0]
    """

    rate: float
    noise_shape: tuple[int | None, ...] | None = None

    def __post_init__(self):
        if not 0.0 <= float(self.rate) < 1.0:
            raise ConfigError(
                f"Dropout rate must be in [0, 1), got {self.rate!r}; "
                "it is the fraction of inputs set to zero."
            )
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        if not train:
            return x
        rate = hyperparams.get("dropout_rate", self.rate)
        static = isinstance(rate, (int, float))
        if static and rate == 0:
            return x
        keep_prob = 1.0 - rate if static else 1.0 - jnp.asarray(rate, jnp.float32)
        shape = self._keep_shape(x.shape)
        axis = replica_axis()
        if axis is not None and self.has_rng(REPLICATED_RNG):
            keep = self._global_mask(shape, axis, x.shape[0], keep_prob)
        else:
            keep = jax.random.bernoulli(self.make_rng("dropout"), keep_prob, shape)
        return jnp.where(keep, x / jnp.asarray(keep_prob, x.dtype), jnp.zeros_like(x))

    def _keep_shape(self, shape) -> tuple:
        """The keep mask's shape: the input's, or ``noise_shape`` filled from it."""
        return tuple(shape) if self.noise_shape is None else self._mask_shape(shape)

    def _mask_shape(self, shape) -> tuple:
        """``noise_shape`` with Keras's None entries filled from the input's ``shape``."""
        noise = tuple(self.noise_shape)
        filled = tuple(d if n is None else n for n, d in zip(noise, shape, strict=False))
        if len(noise) != len(shape) or any(n not in (1, d) for n, d in zip(filled, shape)):
            raise ShapeError(
                f"Dropout noise_shape {noise} does not fit inputs of shape {tuple(shape)}: "
                "it needs one entry per axis, each None, 1 or the input's size."
            )
        return filled

    def _global_mask(self, shape, axis: str, rows: int, keep_prob):
        # This replica's rows of the mask one device would draw for the whole
        # batch, so masks do not depend on the device count (jaxnets.layers.replicas).
        key = self.make_rng(REPLICATED_RNG)
        if shape[0] != rows:  # a mask broadcast over the batch is the same everywhere
            return jax.random.bernoulli(key, keep_prob, shape)
        full = jax.random.bernoulli(key, keep_prob, (rows * lax.axis_size(axis), *shape[1:]))
        return lax.dynamic_slice_in_dim(full, lax.axis_index(axis) * rows, rows)


class SpatialDropout1D(Dropout):
    """Dropout of whole channels of ``(B, T, C)`` inputs (Keras ``SpatialDropout1D``).

    One keep mask per example and channel, shared by every time step (``noise_shape``
    ``(B, 1, C)``); kept values are scaled by ``1 / (1 - rate)``; eval mode is the identity.

    Attributes:
      rate: fraction of channels set to zero in train mode, in [0, 1).
      input_shape: keyword-only (Keras): one example's shape without the batch axis;
        only `Sequential` reads it. Default None.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> y = SpatialDropout1D(0.5).apply({}, jnp.ones((1, 4, 8)), train=True,
      ...                                 rngs={"dropout": jax.random.key(0)})
      >>> bool((y == y[:, :1]).all())  # each channel kept or dropped at every step
      True
    """

    spatial_rank: ClassVar[int] = 1

    def _keep_shape(self, shape) -> tuple:
        check_spatial_rank(type(self).__name__, shape, self.spatial_rank)
        return (shape[0], *(1,) * self.spatial_rank, shape[-1])

    def __call__(self, x, train: bool = False):
        self._keep_shape(x.shape)  # the rank check, in eval mode too
        return super().__call__(x, train=train)


class SpatialDropout2D(SpatialDropout1D):
    """Dropout of whole channels of NHWC images (Keras ``SpatialDropout2D``).

    One keep mask per example and channel (``noise_shape`` ``(B, 1, 1, C)``); see
    `SpatialDropout1D`.

    Attributes:
      rate: fraction of channels set to zero in train mode, in [0, 1).
      input_shape: keyword-only (Keras): one example's shape without the batch axis;
        only `Sequential` reads it. Default None.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> y = SpatialDropout2D(0.5).apply({}, jnp.ones((1, 3, 3, 8)), train=True,
      ...                                 rngs={"dropout": jax.random.key(0)})
      >>> bool((y == y[:, :1, :1]).all())
      True
    """

    spatial_rank: ClassVar[int] = 2


class GaussianNoise(Layer):
    """Adds zero-mean Gaussian noise in train mode (Keras ``GaussianNoise``).

    Draws from the ``'dropout'`` RNG (which the training step provides); eval mode
    is the identity.

    Attributes:
      stddev: the noise's standard deviation.
      input_shape: keyword-only (Keras): one example's shape without the batch axis;
        only `Sequential` reads it. Default None.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> layer = GaussianNoise(0.5)
      >>> layer.apply({}, jnp.ones(3)).tolist()  # eval: unchanged
      [1.0, 1.0, 1.0]
      >>> y = layer.apply({}, jnp.zeros(10_000), train=True, rngs={"dropout": jax.random.key(0)})
      >>> round(float(y.std()), 1)
      0.5
    """

    stddev: float

    def __post_init__(self):
        if not float(self.stddev) >= 0:
            raise ConfigError(f"GaussianNoise stddev must be >= 0, got {self.stddev!r}.")
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = float_inputs(x)
        if not train or self.stddev == 0:
            return x
        noise = jax.random.normal(self.make_rng("dropout"), x.shape, x.dtype)
        return x + jnp.asarray(self.stddev, x.dtype) * noise
