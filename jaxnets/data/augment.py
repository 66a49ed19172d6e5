"""Jit-compiled, keyed augmentation of NHWC image batches.

Each example draws from its own key ``jax.random.fold_in(key, index)`` where
``index`` is the example's global position (``indices=``; ``arange(B)`` by
default). An example is therefore augmented the same way whether the batch is
processed whole, split into chunks, or sharded across devices, as long as
``indices`` travel with the rows.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxnets.data.augment import random_crop, random_flip
  >>> images = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1)
  >>> key = jax.random.key(0)
  >>> bool((random_flip(key, random_flip(key, images)) == images).all())
  True
  >>> random_crop(key, images, padding=1).shape
  (2, 4, 4, 1)
"""

from __future__ import annotations

import numbers
from functools import partial

import jax
import jax.numpy as jnp

from jaxnets.errors import ConfigError, ShapeError

_MODES = ("constant", "edge", "reflect", "symmetric", "wrap")


def _indices(images, indices):
    if images.ndim != 4:
        raise ShapeError(f"images must be NHWC (4-D), got shape {images.shape}.")
    if indices is None:
        return jnp.arange(images.shape[0], dtype=jnp.uint32)
    indices = jnp.asarray(indices)
    if indices.shape != images.shape[:1]:
        raise ShapeError(
            f"indices must have shape ({images.shape[0]},) (one global index per example), "
            f"got {indices.shape}."
        )
    return indices.astype(jnp.uint32)


def example_keys(key, indices):
    """One key per example: ``fold_in(key, index)``.

    Example:
      >>> keys = example_keys(jax.random.key(0), jnp.arange(3))
      >>> keys.shape
      (3,)
    """
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)


@partial(jax.jit, static_argnames=("vertical",))
def _flip(key, images, indices, prob, vertical):
    def one(k, image):
        flipped = jnp.flip(image, axis=0 if vertical else 1)
        return jnp.where(jax.random.bernoulli(k, prob), flipped, image)

    return jax.vmap(one)(example_keys(key, indices), images)


def random_flip(key, images, *, prob: float = 0.5, vertical: bool = False, indices=None):
    """Mirrors each image left-right (or up-down) with probability ``prob``.

    The same key gives the same decisions, so flipping twice restores the batch.

    Args:
      key: a JAX PRNG key.
      images: ``(B, H, W, C)``.
      prob: probability of flipping an example.
      vertical: flip along H instead of W.
      indices: global index of each example, ``(B,)``; defaults to ``arange(B)``.

    Returns:
      Images of the same shape, each one flipped or left as it was.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.data import random_flip
      >>> row = jnp.arange(3.0).reshape(1, 1, 3, 1)  # one 1x3 image: 0 1 2
      >>> random_flip(jax.random.key(0), row, prob=1.0)[..., 0].tolist()
      [[[2.0, 1.0, 0.0]]]
    """
    images = jnp.asarray(images)
    return _flip(key, images, _indices(images, indices), _probability(prob), vertical)


def _probability(prob):
    """``prob`` as a float in [0, 1]: `jax.random.bernoulli` refuses an int such as
    ``prob=1`` with a TypeError, and treats values outside [0, 1] as 0 or 1."""
    if isinstance(prob, jax.Array):  # possibly traced: only its dtype can be fixed
        return prob.astype(jnp.result_type(float))
    if isinstance(prob, bool) or not isinstance(prob, numbers.Real) or not 0.0 <= prob <= 1.0:
        raise ConfigError(f"prob must be a number in [0, 1], got {prob!r}.")
    return float(prob)


@partial(jax.jit, static_argnames=("pad_h", "pad_w", "mode"))
def _crop(key, images, indices, fill, pad_h, pad_w, mode):
    height, width = images.shape[1:3]
    widths = ((pad_h, pad_h), (pad_w, pad_w), (0, 0))

    def one(k, image):
        if mode == "constant":
            padded = jnp.pad(image, widths, mode="constant", constant_values=fill)
        else:
            padded = jnp.pad(image, widths, mode=mode)
        kh, kw = jax.random.split(k)
        top = jax.random.randint(kh, (), 0, 2 * pad_h + 1)
        left = jax.random.randint(kw, (), 0, 2 * pad_w + 1)
        return jax.lax.dynamic_slice(padded, (top, left, 0), (height, width, image.shape[2]))

    return jax.vmap(one)(example_keys(key, indices), images)


def _pads(value, name: str) -> tuple[int, int]:
    # numbers.Integral admits NumPy integers (np.int64(2)); bools are not sizes.
    def is_size(p):
        return isinstance(p, numbers.Integral) and not isinstance(p, bool) and p >= 0

    pairs = isinstance(value, tuple | list) and len(value) == 2
    pads = tuple(value) if pairs else (value, value)
    if not all(is_size(p) for p in pads):
        raise ConfigError(f"{name} must be an int >= 0 or a pair of them, got {value!r}.")
    return int(pads[0]), int(pads[1])


def random_crop(key, images, padding=4, *, mode: str = "constant", fill=0.0, indices=None):
    """Pads each image by ``padding`` pixels, then crops a random window of the original size.

    Args:
      key: a JAX PRNG key.
      images: ``(B, H, W, C)``.
      padding: pixels added on each side, an int or ``(pad_h, pad_w)``.
      mode: ``jnp.pad`` mode: ``"constant"`` (with ``fill``), ``"edge"``, ``"reflect"``...
      fill: value of the padding in constant mode.
      indices: global index of each example, ``(B,)``; defaults to ``arange(B)``.

    Returns:
      Images of the same shape; each example gets its own offset.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.data import random_crop
      >>> key = jax.random.key(0)
      >>> images = jnp.arange(2 * 4 * 4, dtype=jnp.float32).reshape(2, 4, 4, 1)
      >>> whole = random_crop(key, images, padding=1)
      >>> whole.shape
      (2, 4, 4, 1)
      >>> # Example 1 alone, given its global index, gets the same crop as in the batch.
      >>> bool((random_crop(key, images[1:], padding=1, indices=[1]) == whole[1:]).all())
      True
    """
    if mode not in _MODES:
        raise ConfigError(f"mode must be one of {_MODES}, got {mode!r}.")
    pad_h, pad_w = _pads(padding, "padding")
    images = jnp.asarray(images)
    idx = _indices(images, indices)
    return _crop(key, images, idx, jnp.asarray(fill, images.dtype), pad_h, pad_w, mode)


def random_shift(key, images, max_shift=2, *, fill=0.0, indices=None):
    """Translates each image by up to ``max_shift`` pixels per axis, filling with ``fill``.

    ``max_shift`` is an int or ``(max_dy, max_dx)``. Equivalent to
    ``random_crop(..., padding=max_shift, mode="constant")``.

    Args:
      key: a JAX PRNG key.
      images: ``(B, H, W, C)``.
      max_shift: the largest shift in pixels, an int or ``(max_dy, max_dx)``;
        each example's shift is uniform in ``[-max_shift, max_shift]`` per axis.
      fill: value of the pixels shifted in.
      indices: global index of each example, ``(B,)``; defaults to ``arange(B)``.

    Returns:
      Images of the same shape and dtype; each example gets its own shift.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.data import random_crop, random_shift
      >>> key = jax.random.key(0)
      >>> images = jnp.ones((2, 4, 4, 1))
      >>> shifted = random_shift(key, images, max_shift=1)
      >>> shifted.shape, bool((shifted == random_crop(key, images, 1)).all())
      ((2, 4, 4, 1), True)
      >>> bool((random_shift(key, images, max_shift=0) == images).all())  # no shift
      True
    """
    return random_crop(key, images, _pads(max_shift, "max_shift"), fill=fill, indices=indices)


def augment_images(key, images, *, flip: bool = True, crop_padding=4, indices=None):
    """The usual CIFAR/Fashion-MNIST recipe: random crop with padding, then random flip.

    Args:
      key: a JAX PRNG key, split into one key for the crop and one for the flip.
      images: ``(B, H, W, C)``.
      flip: apply `random_flip` (left-right, probability 0.5) after the crop.
      crop_padding: the ``padding`` of `random_crop` (zero padding), an int or
        ``(pad_h, pad_w)``; 0 or None skips the crop.
      indices: global index of each example, ``(B,)``; defaults to ``arange(B)``.

    Returns:
      Augmented images of the same shape.

    Example:
      >>> out = augment_images(jax.random.key(1), jnp.zeros((3, 8, 8, 1)))
      >>> out.shape
      (3, 8, 8, 1)
    """
    k_crop, k_flip = jax.random.split(key)
    if crop_padding:
        images = random_crop(k_crop, images, crop_padding, indices=indices)
    if flip:
        images = random_flip(k_flip, images, indices=indices)
    return images
