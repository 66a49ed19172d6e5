"""Max and average pooling (Keras names), elementwise kernels on CPU.

XLA's CPU `reduce_window` and, above all, the `select_and_scatter` gradient
of max pooling are slow. On CPU (``impl='im2col'``, the default there) max
pooling is the elementwise `jnp.maximum` of the window's p*p shifted,
strided slices, whose gradient is a select per slice. Average pooling with
pool size == stride (windows tile the input) is a reshape to
``(B, Ho, p, Wo, p, C)`` and a sum, whose gradient is a broadcast; other
strides sum the shifted slices. For max pooling the slices beat a
reshape-and-max, whose gradient compares with the max, counts ties and
divides (small-CNN training step, best of three on a loaded 2-core CPU:
25.5 against 22.4 steps/s). ``impl='xla'`` (the default off CPU) uses
`lax.reduce_window`.

'same' padding follows Keras: pads are placed as TensorFlow places them, max
pooling ignores them, and average pooling divides by the number of real
inputs in each window (``count_include_pad=False``).

Example:
  >>> import jax.numpy as jnp
  >>> from jaxnets.layers import MaxPooling2D
  >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  >>> MaxPooling2D(2).apply({}, x)[0, :, :, 0].tolist()
  [[5.0, 7.0], [13.0, 15.0]]
"""

from __future__ import annotations

import itertools
from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxnets.errors import ShapeError, lookup
from jaxnets.layers.base import (
    Layer,
    as_tuple,
    check_spatial_rank,
    float_inputs,
    resolve_impl,
)


def _pads(spatial, pool, strides, padding):
    if padding == "valid":
        return [(0, 0)] * len(spatial)
    return lax.padtype_to_pads(spatial, pool, strides, "SAME")


def _pool_fast(x, pool, strides, pads, reduce: str):
    """Pooling by shifted strided slices, or by reshape for a tiling average."""
    fill = -jnp.inf if reduce == "max" else 0.0
    if any(p != (0, 0) for p in pads):
        x = jnp.pad(x, [(0, 0), *pads, (0, 0)], constant_values=fill)
    spatial = x.shape[1:-1]
    out = [(n - p) // s + 1 for n, p, s in zip(spatial, pool, strides, strict=True)]
    if reduce != "max" and tuple(pool) == tuple(strides):
        # Windows tile the input: crop the remainder 'valid' drops, then reduce.
        x = x[(slice(None), *(slice(0, o * p) for o, p in zip(out, pool, strict=True)))]
        shape = [x.shape[0]]
        for o, p in zip(out, pool, strict=True):
            shape += [o, p]
        x = x.reshape(*shape, x.shape[-1])
        axes = tuple(range(2, 2 * len(pool) + 1, 2))
        return x.sum(axis=axes)
    result = None
    for tap in itertools.product(*(range(p) for p in pool)):
        start = [0, *tap, 0]
        limit = [
            x.shape[0],
            *(t + (o - 1) * s + 1 for t, o, s in zip(tap, out, strides)),
            x.shape[-1],
        ]
        part = lax.slice(x, start, limit, (1, *strides, 1))
        if result is None:
            result = part
        else:
            result = jnp.maximum(result, part) if reduce == "max" else result + part
    return result


def _window_counts(spatial, pool, strides, pads) -> np.ndarray:
    """Real (unpadded) inputs per window, shape ``(1, *out, 1)``; a trace-time constant.

    Pure NumPy, so it stays a constant under ``jit`` (a `jax.numpy` op there would
    give a tracer). A window's count is the product of its counts along each axis.

    Example:
      >>> _window_counts((5,), (3,), (2,), [(1, 1)])[0, :, 0].tolist()  # pads at both ends
      [2.0, 3.0, 2.0]
    """
    counts = np.ones((1,) * (len(spatial) + 2), np.float32)
    for axis, (n, p, s, (low, high)) in enumerate(zip(spatial, pool, strides, pads, strict=True)):
        real = np.pad(np.ones(n, np.float32), (low, high))
        starts = np.arange((n + low + high - p) // s + 1) * s
        per_axis = np.array([real[i : i + p].sum() for i in starts], np.float32)
        counts = counts * per_axis.reshape([-1 if a == axis + 1 else 1 for a in range(counts.ndim)])
    return counts


def pool(x, pool_size, strides, padding: str, reduce: str, impl: str = "auto"):
    """Max (``reduce='max'``) or average (``'avg'``) pooling of ``(B, *spatial, C)``.

    Args:
      x: ``(B, *spatial, C)`` input.
      pool_size: window size, a tuple with one int per spatial axis.
      strides: step between windows, a tuple like ``pool_size``.
      padding: 'valid' or 'same' (lower case), as in Keras.
      reduce: 'max' or 'avg'; 'avg' divides by the real (unpadded) inputs per window
        (integer inputs are averaged, and returned, in float32).
      impl: 'auto' (default), 'im2col' or 'xla'; see `resolve_impl`.

    Returns:
      ``(B, *out, C)`` pooled array, ``out`` the number of windows per spatial axis.
    """
    if reduce != "max":
        # A window's sum in a small integer dtype wraps around (uint8: 4 * 200 = 32), and
        # the tiling reshape sums in a wider dtype than the slices: average in float32.
        x = float_inputs(x)
    pads = _pads(x.shape[1:-1], pool_size, strides, padding)
    if resolve_impl(impl) == "xla":
        cfg = ((1, *pool_size, 1), (1, *strides, 1), [(0, 0), *pads, (0, 0)])
        if reduce == "max":
            return lax.reduce_window(x, -jnp.inf, lax.max, *cfg)
        total = lax.reduce_window(x, 0.0, lax.add, *cfg)
    else:
        total = _pool_fast(x, pool_size, strides, pads, reduce)
        if reduce == "max":
            return total
    return total / _window_counts(x.shape[1:-1], pool_size, strides, pads).astype(x.dtype)


def check_fits_window(layer: str, pool_size, spatial) -> None:
    """Raises a `ShapeError` naming ``layer`` and the fix if a 'valid' pool gets no window.

    Args:
      layer: the layer's name for the message, e.g. ``"MaxPooling2D pool1"``.
      pool_size: window size, one int per spatial axis.
      spatial: the input's spatial shape ``x.shape[1:-1]``.

    Raises:
      ShapeError: if any spatial size is smaller than its window.

    Example:
      >>> check_fits_window("MaxPooling2D", (2, 2), (5, 5))  # fits: returns None
      >>> check_fits_window("MaxPooling2D", (2, 2), (1, 5))
      Traceback (most recent call last):
      ...
      jaxnets.errors.ShapeError: MaxPooling2D with pool_size (2, 2) and 'valid' padding got a (1, 5) input: ...
    """
    if any(d < p for d, p in zip(spatial, pool_size, strict=True)):
        raise ShapeError(
            f"{layer} with pool_size {tuple(pool_size)} and 'valid' padding got a {tuple(spatial)} "
            "input: the layers before it shrank the input below one window. Use larger inputs, "
            "padding='same' in the convolutions before it, or fewer pooling layers."
        )


class _Pooling(Layer):
    rank: ClassVar[int] = 2
    reduce: ClassVar[str] = "max"

    pool_size: int | tuple[int, ...] = 2
    strides: int | tuple[int, ...] | None = None
    padding: str = "valid"
    impl: str = "auto"

    def __post_init__(self):
        # Keras rejects these at construction; later they would divide by zero while tracing.
        as_tuple(self.pool_size, self.rank, f"{type(self).__name__} pool_size")
        if self.strides is not None:
            as_tuple(self.strides, self.rank, f"{type(self).__name__} strides")
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        check_spatial_rank(type(self).__name__, x.shape, self.rank)
        lookup(self.padding, {"valid": 0, "same": 1}, kind="padding")
        size = as_tuple(self.pool_size, self.rank, "pool_size")
        # Keras: strides=None means strides equal to pool_size.
        strides = size if self.strides is None else as_tuple(self.strides, self.rank, "strides")
        if self.padding.lower() == "valid":
            layer = f"{type(self).__name__} {self.name or ''}".strip()
            check_fits_window(layer, size, x.shape[1:-1])
        return pool(x, size, strides, self.padding.lower(), self.reduce, self.impl)


class MaxPooling1D(_Pooling):
    """Max over windows of ``(B, T, C)`` (Keras ``MaxPooling1D``).

    Attributes:
      pool_size: window size (int or tuple); default 2.
      strides: step; None (default) means ``pool_size``.
      padding: 'valid' or 'same'.
        'valid' needs one full window; 'same' pads as TensorFlow (the max ignores the pads).
      impl: 'auto', 'im2col' (reshape / slices) or 'xla'.
        'auto' (default) picks the slices on CPU and `lax.reduce_window` on GPU/TPU.
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(T, C)``; only `Sequential` reads it, to build from its first layer. Default None.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.layers import MaxPooling1D
      >>> x = jnp.array([1.0, 3.0, 2.0, 5.0, 4.0]).reshape(1, 5, 1)  # (B, T, C)
      >>> MaxPooling1D(2).apply({}, x)[0, :, 0].tolist()  # 'valid' drops the last step
      [3.0, 5.0]
      >>> MaxPooling1D(2, padding="same").apply({}, x)[0, :, 0].tolist()
      [3.0, 5.0, 4.0]
    """

    rank: ClassVar[int] = 1


class MaxPooling2D(_Pooling):
    """Max over windows of NHWC images (Keras ``MaxPooling2D``); see `MaxPooling1D`.

    Attributes:
      pool_size: window size (int or 2-tuple); default 2.
      strides: step between windows (int or 2-tuple); None (default) means ``pool_size``.
      padding: 'valid' (default; the input must hold one window) or 'same'
        (pads as TensorFlow; the max ignores the pads).
      impl: 'auto' (default: slices / reshape on CPU, `lax.reduce_window` on GPU/TPU),
        'im2col' or 'xla' to force one.
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(H, W, C)``; only `Sequential` reads it, to build from its first layer. Default None.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.layers import MaxPooling2D
      >>> x = jnp.arange(9.0).reshape(1, 3, 3, 1)  # [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
      >>> MaxPooling2D(2, strides=1).apply({}, x)[0, :, :, 0].tolist()
      [[4.0, 5.0], [7.0, 8.0]]
    """


class AveragePooling1D(_Pooling):
    """Mean over windows of ``(B, T, C)`` (Keras ``AveragePooling1D``); see `MaxPooling1D`.

    Attributes:
      pool_size: window size (int or 1-tuple); default 2.
      strides: step between windows (int or 1-tuple); None (default) means ``pool_size``.
      padding: 'valid' (default; the input must hold one window) or 'same'
        (pads as TensorFlow; pads are not counted in the mean).
      impl: 'auto' (default: slices / reshape on CPU, `lax.reduce_window` on GPU/TPU),
        'im2col' or 'xla' to force one.
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(T, C)``; only `Sequential` reads it, to build from its first layer. Default None.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.layers import AveragePooling1D
      >>> x = jnp.array([1.0, 3.0, 2.0, 5.0, 4.0]).reshape(1, 5, 1)
      >>> AveragePooling1D(2).apply({}, x)[0, :, 0].tolist()
      [2.0, 3.5]
      >>> AveragePooling1D(2, padding="same").apply({}, x)[0, :, 0].tolist()  # pad not counted
      [2.0, 3.5, 4.0]
    """

    rank: ClassVar[int] = 1
    reduce: ClassVar[str] = "avg"


class AveragePooling2D(_Pooling):
    """Mean over windows of NHWC images (Keras ``AveragePooling2D``); see `MaxPooling1D`.

    Attributes:
      pool_size: window size (int or 2-tuple); default 2.
      strides: step between windows (int or 2-tuple); None (default) means ``pool_size``.
      padding: 'valid' (default; the input must hold one window) or 'same'
        (pads as TensorFlow; pads are not counted in the mean).
      impl: 'auto' (default: slices / reshape on CPU, `lax.reduce_window` on GPU/TPU),
        'im2col' or 'xla' to force one.
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(H, W, C)``; only `Sequential` reads it, to build from its first layer. Default None.

    Example:
      >>> import jax.numpy as jnp
      >>> AveragePooling2D(2).apply({}, jnp.ones((1, 4, 4, 3))).shape
      (1, 2, 2, 3)
    """

    reduce: ClassVar[str] = "avg"


class _GlobalPooling(Layer):
    rank: ClassVar[int] = 2
    reduce: ClassVar[str] = "avg"

    keepdims: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        if x.ndim != self.rank + 2:
            raise ShapeError(
                f"{type(self).__name__} expects inputs of rank {self.rank + 2}, got {x.shape}."
            )
        axes = tuple(range(1, self.rank + 1))
        if mask is None:
            if self.reduce == "max":
                return x.max(axis=axes, keepdims=self.keepdims)
            return x.mean(axis=axes, keepdims=self.keepdims)
        # (B, T) mask, True at valid steps (1-D only): padded steps are ignored.
        if self.rank != 1 or mask.shape != x.shape[:2]:
            raise ShapeError(
                f"{type(self).__name__} takes a mask of shape (B, T) = {x.shape[:2]} for "
                f"(B, T, C) inputs (1-D pooling only), got a mask of shape {mask.shape}."
            )
        m = mask.astype(bool)[..., None]
        if self.reduce == "max":
            peak = jnp.where(m, x, -jnp.inf).max(axis=axes, keepdims=self.keepdims)
            # A row with no valid step gives 0, as the average does, not -inf (which
            # the next layer would turn into inf or NaN).
            return jnp.where(m.any(axis=axes, keepdims=self.keepdims), peak, 0.0).astype(x.dtype)
        total = jnp.where(m, x, 0).sum(axis=axes, keepdims=self.keepdims)
        count = m.sum(axis=axes, keepdims=self.keepdims).astype(x.dtype)
        return total / jnp.maximum(count, 1.0)


class GlobalAveragePooling1D(_GlobalPooling):
    """Mean over time of ``(B, T, C)`` -> ``(B, C)``; ``mask`` (B, T) skips padded steps.

    Attributes:
      keepdims: keep the time axis as size 1, ``(B, 1, C)`` (default False: ``(B, C)``).
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(T, C)``; only `Sequential` reads it, to build from its first layer. Default None.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[[1.0], [3.0], [100.0]]])
      >>> GlobalAveragePooling1D().apply({}, x, mask=jnp.array([[1, 1, 0]])).tolist()
      [[2.0]]
    """

    rank: ClassVar[int] = 1


class GlobalMaxPooling1D(_GlobalPooling):
    """Max over time of ``(B, T, C)`` -> ``(B, C)``; ``mask`` (B, T) skips padded steps.

    Attributes:
      keepdims: keep the time axis as size 1, ``(B, 1, C)`` (default False: ``(B, C)``).
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(T, C)``; only `Sequential` reads it, to build from its first layer. Default None.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.layers import GlobalMaxPooling1D
      >>> x = jnp.array([[[1.0], [3.0], [100.0]]])
      >>> GlobalMaxPooling1D().apply({}, x).tolist()
      [[100.0]]
      >>> GlobalMaxPooling1D().apply({}, x, mask=jnp.array([[1, 1, 0]])).tolist()
      [[3.0]]
    """

    rank: ClassVar[int] = 1
    reduce: ClassVar[str] = "max"


class GlobalAveragePooling2D(_GlobalPooling):
    """Mean over height and width of NHWC images -> ``(B, C)``.

    The ``mask`` call argument is for the 1-D layers only: here it raises `ShapeError`.

    Attributes:
      keepdims: keep height and width as size 1, ``(B, 1, 1, C)`` (default False: ``(B, C)``).
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(H, W, C)``; only `Sequential` reads it, to build from its first layer. Default None.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.layers import GlobalAveragePooling2D
      >>> x = jnp.arange(8.0).reshape(1, 2, 2, 2)  # channels [0, 2, 4, 6] and [1, 3, 5, 7]
      >>> GlobalAveragePooling2D().apply({}, x).tolist()
      [[3.0, 4.0]]
      >>> GlobalAveragePooling2D(keepdims=True).apply({}, x).shape
      (1, 1, 1, 2)
    """


class GlobalMaxPooling2D(_GlobalPooling):
    """Max over height and width of NHWC images -> ``(B, C)``.

    The ``mask`` call argument is for the 1-D layers only: here it raises `ShapeError`.

    Attributes:
      keepdims: keep height and width as size 1, ``(B, 1, 1, C)`` (default False: ``(B, C)``).
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(H, W, C)``; only `Sequential` reads it, to build from its first layer. Default None.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.layers import GlobalMaxPooling2D
      >>> x = jnp.arange(8.0).reshape(1, 2, 2, 2)  # channels [0, 2, 4, 6] and [1, 3, 5, 7]
      >>> GlobalMaxPooling2D().apply({}, x).tolist()
      [[6.0, 7.0]]
    """

    reduce: ClassVar[str] = "max"
