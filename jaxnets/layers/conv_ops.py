"""Convolution kernels: im2col / col2im for CPU, XLA's convolution elsewhere.

XLA's CPU convolution is slow, and slower still inside `lax.scan`. On CPU an
N-d convolution is cheaper written as the matrix product it is: gather each
kernel tap's shifted, strided slice of the input, concatenate them on the
channel axis (im2col), and do one ``(B*out, taps*C) @ (taps*C, F)`` product,
which XLA hands to its fast GEMM. Its gradient is slices and pads, also fast.
The transposed convolution runs the product first and then scatters each
tap's result into the output with an interior-padded `lax.pad` (col2im), so
no multiplications are spent on the zeros a dilated input would hold.

Every function takes NHWC-style inputs ``(B, *spatial, C)`` and HWIO-style
kernels ``(*kernel_size, C, F)``, for any number of spatial dimensions, so the
two implementations share parameters exactly.

Example:
  >>> import jax.numpy as jnp
  >>> x, k = jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1))
  >>> conv_im2col(x, k, strides=(1, 1), padding="valid").shape
  (1, 2, 2, 1)
"""

from __future__ import annotations

import itertools
import math

import jax.numpy as jnp
from jax import lax

from jaxnets.errors import ShapeError

_DIMS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}


def _accumulator(dtype):
    """The dtype sums of products of ``dtype`` values run in: at least float32."""
    return jnp.promote_types(dtype, jnp.float32)


def conv_padding(spatial, kernel_size, strides, dilation, padding: str) -> list[tuple[int, int]]:
    """Explicit ``(low, high)`` pads for Keras' 'valid', 'same' or 'causal'.

    'same' pads as TensorFlow does (the extra pixel goes at the end), so
    outputs match Keras; 'causal' (1-D) pads only on the left.
    """
    eff = [(k - 1) * d + 1 for k, d in zip(kernel_size, dilation, strict=True)]
    if padding == "valid":
        return [(0, 0)] * len(spatial)
    if padding == "causal":
        return [(e - 1, 0) for e in eff]
    return lax.padtype_to_pads(spatial, eff, strides, "SAME")


def conv_xla(x, kernel, *, strides, padding: str, dilation=None):
    """`lax.conv_general_dilated` with Keras padding names."""
    nd = x.ndim - 2
    dilation = dilation or (1,) * nd
    pads = conv_padding(x.shape[1:-1], kernel.shape[:nd], strides, dilation, padding)
    return lax.conv_general_dilated(
        x, kernel, strides, pads, rhs_dilation=dilation, dimension_numbers=_DIMS[nd]
    )


def conv_im2col(x, kernel, *, strides, padding: str, dilation=None):
    """The same convolution as `conv_xla`, as one matrix product (im2col)."""
    nd = x.ndim - 2
    ksize, (cin, cout) = kernel.shape[:nd], kernel.shape[nd:]
    dilation = dilation or (1,) * nd
    pads = conv_padding(x.shape[1:-1], ksize, strides, dilation, padding)
    # Half precision: gather the taps from a float32 copy of x, so that the input
    # gradient sums the taps' contributions in float32 and rounds once, as XLA's
    # convolution does (a rounding per tap doubled bfloat16's error, 5x5 kernel).
    # The product itself still runs in x's dtype.
    dtype = x.dtype
    x = x.astype(_accumulator(dtype))
    if any(p != (0, 0) for p in pads):
        x = jnp.pad(x, [(0, 0), *pads, (0, 0)])
    spatial = x.shape[1:-1]
    out = [
        (n - (k - 1) * d - 1) // s + 1
        for n, k, d, s in zip(spatial, ksize, dilation, strides, strict=True)
    ]
    cols = []
    # Tap order (row-major over the kernel window, then channels) matches the
    # HWIO kernel's reshape to (taps * C, F).
    for tap in itertools.product(*(range(k) for k in ksize)):
        start = [0] + [t * d for t, d in zip(tap, dilation, strict=True)] + [0]
        limit = (
            [x.shape[0]]
            + [st + (o - 1) * s + 1 for st, o, s in zip(start[1:-1], out, strides, strict=True)]
            + [cin]
        )
        cols.append(lax.slice(x, start, limit, (1, *strides, 1)))
    patches = (cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)).astype(dtype)
    y = jnp.dot(patches.reshape(-1, patches.shape[-1]), kernel.reshape(-1, cout))
    return y.reshape(x.shape[0], *out, cout)


def conv_maxpool_im2col(x, kernel, pool_size):
    """A 'valid', stride-1 convolution followed by a 'valid' max pool whose stride is its size.

    Equals ``max_pool(conv_im2col(x, kernel, padding="valid"), pool_size)``
    but computes only the convolution outputs the pool reads: for each window
    position ``w`` (row-major over the window) and pooled position ``q`` it
    takes the input patch of output ``pool_size * q + w``, all in one
    ``(B * pooled * windows, taps * C) @ (taps * C, F)`` product whose rows are
    ordered ``(b, *q, w)``, and the pool is the maximum over ``w``. Outputs a
    pool would drop (the last row of an odd-sized map) are never computed, and
    neither the full feature map nor its strided pooling is materialised, which
    makes the zoo CNN's training step 1.2x faster on CPU (see
    `jaxnets.models.CNN`). The maxima are taken in the order of
    `jaxnets.layers.MaxPooling2D`'s slices, so gradients split ties the same way.

    Example:
      >>> import jax.numpy as jnp
      >>> x, k = jnp.ones((1, 7, 7, 1)), jnp.ones((3, 3, 1, 2))
      >>> conv_maxpool_im2col(x, k, (2, 2)).shape  # conv 5x5, pooled 2x2
      (1, 2, 2, 2)
    """
    nd = x.ndim - 2
    ksize, (cin, cout) = kernel.shape[:nd], kernel.shape[nd:]
    pooled = [(n - k + 1) // p for n, k, p in zip(x.shape[1:-1], ksize, pool_size, strict=True)]
    if min(pooled) < 1:
        raise ShapeError(
            f"input of spatial shape {tuple(x.shape[1:-1])} is too small for a {tuple(ksize)} "
            f"convolution followed by a {tuple(pool_size)} pool: each side needs at least "
            "kernel + pool - 1 pixels."
        )
    dtype = x.dtype
    x = x.astype(_accumulator(dtype))  # float32 taps for the input gradient: `conv_im2col`
    cols = []
    for window in itertools.product(*(range(p) for p in pool_size)):
        for tap in itertools.product(*(range(k) for k in ksize)):
            start = [0, *(w + t for w, t in zip(window, tap, strict=True)), 0]
            limit = [
                x.shape[0],
                *(st + p * (q - 1) + 1 for st, p, q in zip(start[1:-1], pool_size, pooled)),
                cin,
            ]
            cols.append(lax.slice(x, start, limit, (1, *pool_size, 1)))
    # One concatenation, window-major on the channel axis: (B, *pooled, windows * taps * C).
    # Stacking the windows on a new leading axis instead measured 7% slower.
    patches = jnp.concatenate(cols, axis=-1).astype(dtype)
    windows = math.prod(pool_size)
    y = jnp.dot(patches.reshape(-1, patches.shape[-1] // windows), kernel.reshape(-1, cout))
    y = y.reshape(x.shape[0], *pooled, windows, cout)
    out = y[..., 0, :]
    for w in range(1, windows):
        out = jnp.maximum(out, y[..., w, :])
    return out


def conv_transpose_padding(k: int, s: int, padding: str) -> tuple[int, int, int]:
    """``(pad_low, pad_high, unused)`` of `lax.conv_transpose` for one dimension.

    Mirrors `lax.conv_transpose`; its output length is ``n * s`` for 'same'
    and ``n * s + max(k - s, 0)`` for 'valid', Keras' lengths.
    """
    if padding == "same":
        pad_len = k + s - 2
        pad_a = k - 1 if s > k - 1 else math.ceil(pad_len / 2)
    else:
        pad_len = k + s - 2 + max(k - s, 0)
        pad_a = k - 1
    return pad_a, pad_len - pad_a, 0


def conv_transpose_xla(x, kernel, *, strides, padding: str):
    """`lax.conv_transpose` (kernel not flipped, HWIO), as `flax.linen.ConvTranspose`."""
    nd = x.ndim - 2
    pads = [
        conv_transpose_padding(k, s, padding)[:2]
        for k, s in zip(kernel.shape[:nd], strides, strict=True)
    ]
    return lax.conv_transpose(x, kernel, strides, pads, dimension_numbers=_DIMS[nd])


def conv_transpose_col2im(x, kernel, *, strides, padding: str):
    """The same transposed convolution as `conv_transpose_xla`, matmul first.

    Input position ``h`` and (unflipped) tap ``t`` land on output position
    ``s*h + pad_low - t``; each tap's product is placed there by one
    `lax.pad` (interior ``s - 1``, negative edges crop) and the taps summed.
    """
    nd = x.ndim - 2
    ksize, (cin, cout) = kernel.shape[:nd], kernel.shape[nd:]
    spatial = x.shape[1:-1]
    pad_low = [
        conv_transpose_padding(k, s, padding)[0] for k, s in zip(ksize, strides, strict=True)
    ]
    out = [
        n * s + (0 if padding == "same" else max(k - s, 0))
        for n, k, s in zip(spatial, ksize, strides, strict=True)
    ]
    taps = math.prod(ksize)
    # (C, taps * F): one product yields every tap's contribution at once.
    w = jnp.moveaxis(kernel.reshape(taps, cin, cout), 0, 1).reshape(cin, taps * cout)
    # Half-precision taps are summed in float32 and rounded once, as XLA's
    # convolution does: a rounding per tap doubled bfloat16's error (5x5 kernel).
    acc = _accumulator(x.dtype)
    y = jnp.dot(x.reshape(-1, cin), w, preferred_element_type=acc)
    y = y.reshape(*x.shape[:-1], taps, cout)
    total = None
    for i, tap in enumerate(itertools.product(*(range(k) for k in ksize))):
        config = [(0, 0, 0)]
        for n, s, p, t, o in zip(spatial, strides, pad_low, tap, out, strict=True):
            low = p - t
            config.append((low, o - low - (n - 1) * s - 1, s - 1))
        config.append((0, 0, 0))
        part = lax.pad(y[..., i, :], jnp.zeros((), y.dtype), config)
        total = part if total is None else total + part
    return total.astype(x.dtype)


def depthwise_conv(x, kernel, *, strides, padding: str, dilation=None, impl: str = "xla"):
    """Depthwise convolution: each input channel with its own ``depth_multiplier`` filters.

    ``kernel`` is ``(*kernel_size, C, M)`` (Keras's ``depthwise_kernel``); output channel
    ``c * M + m`` is channel ``c`` convolved with ``kernel[..., c, m]``, as in Keras.
    ``impl='xla'`` runs `lax.conv_general_dilated` with ``C`` feature groups;
    ``'im2col'`` sums each tap's shifted, strided slice times its weights (elementwise
    products, no matrix product to lose to the grouping).

    Example:
      >>> import jax.numpy as jnp
      >>> x, k = jnp.ones((1, 4, 4, 3)), jnp.ones((3, 3, 3, 2))
      >>> depthwise_conv(x, k, strides=(1, 1), padding="valid").shape
      (1, 2, 2, 6)
      >>> bool((depthwise_conv(x, k, strides=(1, 1), padding="valid", impl="im2col") == 9).all())
      True
    """
    nd = x.ndim - 2
    ksize, (cin, mult) = kernel.shape[:nd], kernel.shape[nd:]
    dilation = dilation or (1,) * nd
    pads = conv_padding(x.shape[1:-1], ksize, strides, dilation, padding)
    if impl == "xla":
        return lax.conv_general_dilated(
            x,
            kernel.reshape(*ksize, 1, cin * mult),
            strides,
            pads,
            rhs_dilation=dilation,
            dimension_numbers=_DIMS[nd],
            feature_group_count=cin,
        )
    # Half-precision taps are multiplied and summed in float32 and rounded once, as
    # XLA's convolution does: a rounding per tap tripled bfloat16's error (7x7 kernel).
    # Casting x first also sums the input gradient's taps in float32.
    dtype, acc = x.dtype, _accumulator(x.dtype)
    x, weights = x.astype(acc), kernel.reshape(-1, cin * mult).astype(acc)
    if mult > 1:
        x = jnp.repeat(x, mult, axis=-1)  # channel c * M + m reads input channel c
    if any(p != (0, 0) for p in pads):
        x = jnp.pad(x, [(0, 0), *pads, (0, 0)])
    out = [
        (n - (k - 1) * d - 1) // s + 1
        for n, k, d, s in zip(x.shape[1:-1], ksize, dilation, strides, strict=True)
    ]
    total = None
    for i, tap in enumerate(itertools.product(*(range(k) for k in ksize))):
        start = [0] + [t * d for t, d in zip(tap, dilation, strict=True)] + [0]
        limit = (
            [x.shape[0]]
            + [st + (o - 1) * s + 1 for st, o, s in zip(start[1:-1], out, strides, strict=True)]
            + [x.shape[-1]]
        )
        part = lax.slice(x, start, limit, (1, *strides, 1)) * weights[i]
        total = part if total is None else total + part
    return total.astype(dtype)
