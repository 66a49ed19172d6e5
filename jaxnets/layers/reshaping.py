"""Reshaping layers with Keras names: padding, cropping, upsampling, Permute, RepeatVector.

They have no parameters; their arguments and outputs follow Keras 3 (channels-last inputs).

Example:
  >>> import jax.numpy as jnp
  >>> from jaxnets.layers import UpSampling2D, ZeroPadding2D
  >>> x = jnp.ones((2, 3, 3, 4))
  >>> ZeroPadding2D(1).apply({}, x).shape, UpSampling2D(2).apply({}, x).shape
  ((2, 5, 5, 4), (2, 6, 6, 4))
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnets.errors import ConfigError, ShapeError, lookup
from jaxnets.layers.base import Layer, as_tuple, check_positive


def _check_rank(layer, x, rank: int, what: str) -> None:
    if x.ndim != rank:
        raise ShapeError(
            f"{type(layer).__name__} expects inputs of rank {rank} ({what}), got shape {x.shape}."
        )


def _pairs(value, n: int, what: str) -> tuple[tuple[int, int], ...]:
    """Keras's padding / cropping argument as one ``(before, after)`` pair per spatial axis.

    An int applies to both sides of every axis; ``n`` ints to both sides of each axis;
    ``n`` pairs are explicit. For one axis a single pair ``(before, after)`` is explicit.

    Example:
      >>> _pairs(1, 2, "padding"), _pairs((1, 2), 2, "padding"), _pairs((1, 2), 1, "padding")
      (((1, 1), (1, 1)), ((1, 1), (2, 2)), ((1, 2),))
    """
    if isinstance(value, int):
        pairs = ((value, value),) * n
    elif n == 1 and len(value) == 2 and all(isinstance(v, int) for v in value):
        pairs = (tuple(value),)
    elif len(value) == n and all(isinstance(v, int) for v in value):
        pairs = tuple((v, v) for v in value)
    elif len(value) == n and all(len(v) == 2 for v in value):
        pairs = tuple((int(a), int(b)) for a, b in value)
    else:
        raise ConfigError(
            f"{what} must be an int, {n} ints or {n} (before, after) pairs, got {value!r}."
        )
    if any(v < 0 for pair in pairs for v in pair):
        raise ConfigError(f"{what} must not be negative, got {value!r}.")
    return tuple((int(a), int(b)) for a, b in pairs)


class _ZeroPadding(Layer):
    rank: ClassVar[int] = 2

    padding: int | tuple = 1

    def __post_init__(self):
        _pairs(self.padding, self.rank, f"{type(self).__name__} padding")
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        _check_rank(self, x, self.rank + 2, f"batch, {self.rank} spatial dims, channels")
        pads = _pairs(self.padding, self.rank, "padding")
        return jnp.pad(x, [(0, 0), *pads, (0, 0)])


class ZeroPadding1D(_ZeroPadding):
    """Pads ``(B, T, C)`` with zeros along time (Keras ``ZeroPadding1D``).

    Attributes:
      padding: int (both ends) or ``(before, after)``; default 1.
      input_shape: keyword-only (Keras): one example's shape without the batch axis;
        only `Sequential` reads it. Default None.

    Example:
      >>> import jax.numpy as jnp
      >>> ZeroPadding1D((1, 2)).apply({}, jnp.ones((1, 2, 1)))[0, :, 0].tolist()
      [0.0, 1.0, 1.0, 0.0, 0.0]
    """

    rank: ClassVar[int] = 1


class ZeroPadding2D(_ZeroPadding):
    """Pads NHWC images with zeros (Keras ``ZeroPadding2D``).

    Attributes:
      padding: int (every side), ``(rows, cols)`` (both sides of each) or
        ``((top, bottom), (left, right))``; default 1.
      input_shape: keyword-only (Keras): one example's shape without the batch axis;
        only `Sequential` reads it. Default None.

    Example:
      >>> import jax.numpy as jnp
      >>> ZeroPadding2D(((1, 0), (2, 1))).apply({}, jnp.ones((1, 3, 3, 2))).shape
      (1, 4, 6, 2)
    """


class _Cropping(Layer):
    rank: ClassVar[int] = 2

    cropping: int | tuple = 0

    def __post_init__(self):
        _pairs(self.cropping, self.rank, f"{type(self).__name__} cropping")
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        _check_rank(self, x, self.rank + 2, f"batch, {self.rank} spatial dims, channels")
        crops = _pairs(self.cropping, self.rank, "cropping")
        spatial = x.shape[1:-1]
        if any(a + b >= n for (a, b), n in zip(crops, spatial, strict=True)):
            raise ShapeError(
                f"{type(self).__name__} cropping {crops} leaves nothing of inputs of spatial "
                f"shape {tuple(spatial)}."
            )
        index = tuple(slice(a, n - b) for (a, b), n in zip(crops, spatial, strict=True))
        return x[(slice(None), *index, slice(None))]


class Cropping1D(_Cropping):
    """Crops ``(B, T, C)`` along time (Keras ``Cropping1D``).

    Attributes:
      cropping: int (both ends) or ``(before, after)``; Keras's default is ``(1, 1)``.
      input_shape: keyword-only (Keras): one example's shape without the batch axis;
        only `Sequential` reads it. Default None.

    Example:
      >>> import jax.numpy as jnp
      >>> Cropping1D((1, 2)).apply({}, jnp.arange(5.0).reshape(1, 5, 1))[0, :, 0].tolist()
      [1.0, 2.0]
    """

    rank: ClassVar[int] = 1
    cropping: int | tuple = (1, 1)


class Cropping2D(_Cropping):
    """Crops NHWC images (Keras ``Cropping2D``).

    Attributes:
      cropping: int (every side), ``(rows, cols)`` (both sides of each) or
        ``((top, bottom), (left, right))``; default 0.
      input_shape: keyword-only (Keras): one example's shape without the batch axis;
        only `Sequential` reads it. Default None.

    Example:
      >>> import jax.numpy as jnp
      >>> Cropping2D(((1, 0), (0, 1))).apply({}, jnp.ones((1, 3, 3, 2))).shape
      (1, 2, 2, 2)
    """


class UpSampling1D(Layer):
    """Repeats each time step ``size`` times (Keras ``UpSampling1D``).

    Attributes:
      size: the repeat factor (default 2).
      input_shape: keyword-only (Keras): one example's shape without the batch axis;
        only `Sequential` reads it. Default None.

    Example:
      >>> import jax.numpy as jnp
      >>> UpSampling1D(2).apply({}, jnp.array([[[1.0], [2.0]]]))[0, :, 0].tolist()
      [1.0, 1.0, 2.0, 2.0]
    """

    size: int = 2

    def __post_init__(self):
        check_positive("UpSampling1D", size=self.size)
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        _check_rank(self, x, 3, "batch, time, channels")
        return jnp.repeat(x, self.size, axis=1)


_INTERPOLATIONS = {"nearest": "nearest", "bilinear": "bilinear"}


class UpSampling2D(Layer):
    """Enlarges NHWC images by ``size`` (Keras ``UpSampling2D``).

    Attributes:
      size: int or ``(rows, cols)`` factors (default 2).
      interpolation: 'nearest' (default: each pixel repeated) or 'bilinear'
        (`jax.image.resize`, half-pixel centres, as Keras on every backend).
      input_shape: keyword-only (Keras): one example's shape without the batch axis;
        only `Sequential` reads it. Default None.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[1.0, 2.0]]).reshape(1, 1, 2, 1)
      >>> UpSampling2D((1, 2)).apply({}, x)[0, 0, :, 0].tolist()
      [1.0, 1.0, 2.0, 2.0]
    """

    size: int | tuple[int, int] = 2
    interpolation: str = "nearest"

    def __post_init__(self):
        as_tuple(self.size, 2, "UpSampling2D size")
        lookup(self.interpolation, _INTERPOLATIONS, kind="interpolation")
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        _check_rank(self, x, 4, "batch, height, width, channels")
        rows, cols = as_tuple(self.size, 2, "size")
        if lookup(self.interpolation, _INTERPOLATIONS, kind="interpolation") == "nearest":
            return jnp.repeat(jnp.repeat(x, rows, axis=1), cols, axis=2)
        b, h, w, c = x.shape
        return jax.image.resize(x, (b, h * rows, w * cols, c), "bilinear", antialias=False)


class Permute(Layer):
    """Permutes the axes of each example (Keras ``Permute``); the batch axis stays first.

    Attributes:
      dims: a permutation of ``1 .. rank - 1`` (1-indexed, as in Keras): ``(2, 1)``
        swaps the two axes of a ``(B, T, C)`` input.
      input_shape: keyword-only (Keras): one example's shape without the batch axis;
        only `Sequential` reads it. Default None.

    Example:
      >>> import jax.numpy as jnp
      >>> Permute((2, 1)).apply({}, jnp.ones((4, 3, 5))).shape
      (4, 5, 3)
    """

    dims: tuple[int, ...]

    def __post_init__(self):
        if sorted(self.dims) != list(range(1, len(self.dims) + 1)):
            raise ConfigError(
                f"Permute dims must be a permutation of 1..{len(self.dims)} (the batch axis "
                f"is 0 and stays first), got {tuple(self.dims)!r}."
            )
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        _check_rank(self, x, len(self.dims) + 1, f"batch and {len(self.dims)} axes to permute")
        return jnp.transpose(x, (0, *self.dims))


class RepeatVector(Layer):
    """Repeats a ``(B, F)`` input ``n`` times: ``(B, n, F)`` (Keras ``RepeatVector``).

    Attributes:
      n: the number of repeats.
      input_shape: keyword-only (Keras): one example's shape without the batch axis;
        only `Sequential` reads it. Default None.

    Example:
      >>> import jax.numpy as jnp
      >>> RepeatVector(3).apply({}, jnp.array([[1.0, 2.0]])).tolist()
      [[[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]]]
    """

    n: int

    def __post_init__(self):
        check_positive("RepeatVector", n=self.n)
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        _check_rank(self, x, 2, "batch, features")
        return jnp.broadcast_to(x[:, None, :], (x.shape[0], self.n, x.shape[1]))
