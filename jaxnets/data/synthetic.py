"""Small seeded synthetic datasets for tests and examples.

Every generator is deterministic in ``seed`` and returns a `Dataset`, so tests
can train on something learnable in a fraction of a second.

Example:
  >>> from jaxnets import data
  >>> ds = data.load("synthetic", n=100, num_features=5, num_classes=3)
  >>> ds.x_train.shape, ds.y_train.dtype, ds.num_classes
  ((80, 5), dtype('int32'), 3)
  >>> data.load("synthetic_sequence", n=10, length=12).x_mask_train.shape
  (8, 12)
"""

from __future__ import annotations

import numpy as np

from jaxnets.data.datasets import Dataset, register
from jaxnets.errors import ConfigError


def _split(n: int, test_fraction: float) -> int:
    if n < 2 or not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"need n >= 2 and 0 < test_fraction < 1, got {n}, {test_fraction}.")
    return min(n - 1, max(1, int(round(n * (1.0 - test_fraction)))))


def _make(name, task, x, y, num_classes, test_fraction, mask=None) -> Dataset:
    cut = _split(len(x), test_fraction)
    return Dataset(
        x[:cut],
        y[:cut],
        x[cut:],
        y[cut:],
        num_classes=num_classes,
        input_shape=x.shape[1:],
        task=task,
        name=name,
        class_names=None if num_classes is None else tuple(str(c) for c in range(num_classes)),
        x_mask_train=None if mask is None else mask[:cut],
        x_mask_test=None if mask is None else mask[cut:],
    )


def blobs(n: int, num_features: int, num_classes: int, seed: int = 0, spread: float = 1.0):
    """``(x, y)``: Gaussian blobs around random class centres; ``spread`` is the noise std.

    Args:
      n: the number of examples.
      num_features: the number of features of each example.
      num_classes: the number of classes (blobs); labels cycle through
        ``0..num_classes-1`` so each class gets ``n // num_classes`` or one more
        example, the first ``num_classes`` rows covering every class.
      seed: seed of ``np.random.default_rng`` (centres, label order and noise).
      spread: standard deviation of the noise around each centre (the centres
        themselves are drawn with std 3).

    Returns:
      ``x`` float32 ``(n, num_features)`` and ``y`` int32 ``(n,)``.

    Example:
      >>> x, y = blobs(6, 2, 3)
      >>> x.shape, y[:3].tolist(), np.bincount(y).tolist()
      ((6, 2), [0, 1, 2], [2, 2, 2])
    """
    if n < 1 or num_features < 1 or num_classes < 1:
        raise ConfigError(
            f"n, num_features, num_classes must be >= 1, got {n}, {num_features}, {num_classes}."
        )
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, size=(num_classes, num_features))
    y = (np.arange(n) % num_classes).astype(np.int32)
    rng.shuffle(y[num_classes:])  # keep the first rows covering every class
    x = centres[y] + rng.normal(0.0, spread, size=(n, num_features))
    return x.astype(np.float32), y


@register("synthetic", "blobs")
def classification(
    n: int = 512,
    num_features: int = 8,
    num_classes: int = 4,
    seed: int = 0,
    spread: float = 1.0,
    test_fraction: float = 0.2,
) -> Dataset:
    """Gaussian-blob classification, ``x`` float32 ``(n, num_features)``."""
    x, y = blobs(n, num_features, num_classes, seed, spread)
    return _make("synthetic", "classification", x, y, num_classes, test_fraction)


@register("synthetic_regression")
def regression(
    n: int = 512,
    num_features: int = 8,
    num_targets: int = 1,
    seed: int = 0,
    noise: float = 0.1,
    test_fraction: float = 0.2,
) -> Dataset:
    """Linear regression ``y = x @ w + noise``; ``y`` is ``(n,)`` when ``num_targets == 1``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, num_features)).astype(np.float32)
    w = rng.normal(size=(num_features, num_targets))
    y = (x @ w + rng.normal(0.0, noise, size=(n, num_targets))).astype(np.float32)
    y = y[:, 0] if num_targets == 1 else y
    return _make("synthetic_regression", "regression", x, y, None, test_fraction)


@register("synthetic_image")
def image(
    n: int = 256,
    height: int = 8,
    width: int = 8,
    channels: int = 1,
    num_classes: int = 4,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> Dataset:
    """NHWC images in [0, 1]: class ``c`` has a bright square in quadrant ``c % 4``, plus noise."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % num_classes).astype(np.int32)
    rng.shuffle(y[num_classes:])
    x = rng.uniform(0.0, 0.3, size=(n, height, width, channels))
    hh, hw = max(1, height // 2), max(1, width // 2)
    for c in range(num_classes):
        top, left = (c % 4) // 2 * hh, (c % 4) % 2 * hw
        x[y == c, top : top + hh, left : left + hw, :] += 0.6 + 0.1 * (c // 4)
    x = np.clip(x, 0.0, 1.0).astype(np.float32)
    return _make("synthetic_image", "classification", x, y, num_classes, test_fraction)


@register("synthetic_sequence")
def sequence(
    n: int = 256,
    length: int = 16,
    num_features: int = 2,
    num_classes: int = 2,
    seed: int = 0,
    variable_length: bool = True,
    test_fraction: float = 0.2,
) -> Dataset:
    """Sequences ``(n, length, num_features)`` whose class sets the sine frequency.

    With ``variable_length`` each sequence keeps a random length in
    ``[length // 2, length]``; later steps are zero and ``x_mask_*`` marks real steps.
    """
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % num_classes).astype(np.int32)
    rng.shuffle(y[num_classes:])
    t = np.arange(length)[None, :, None]
    freq = (1.0 + y)[:, None, None] * np.pi / length
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, num_features))
    x = np.sin(freq * t + phase) + rng.normal(0.0, 0.1, size=(n, length, num_features))
    if variable_length:
        lengths = rng.integers(max(1, length // 2), length + 1, size=n)
    else:
        lengths = np.full(n, length)
    mask = np.arange(length)[None, :] < lengths[:, None]
    x = np.where(mask[..., None], x, 0.0).astype(np.float32)
    return _make("synthetic_sequence", "classification", x, y, num_classes, test_fraction, mask)
