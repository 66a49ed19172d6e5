"""Array preprocessing with statistics taken from the training split only.

Every transform that learns something (mean, std, min, max) learns it from the
first array and applies it unchanged to the others, so no test statistic leaks
into training.

Example:
  >>> import numpy as np
  >>> from jaxnets.data.preprocessing import standardize
  >>> train, test, stats = standardize(np.array([[0.0], [2.0]]), np.array([[4.0]]))
  >>> train.ravel().tolist(), test.ravel().tolist(), stats.mean.tolist()
  ([-1.0, 1.0], [3.0], [1.0])
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxnets.errors import ConfigError, DataError, ShapeError


class Stats(NamedTuple):
    """Per-feature statistics learned from the training array."""

    shift: np.ndarray
    scale: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        return self.shift

    @property
    def std(self) -> np.ndarray:
        return self.scale


def _as_float(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 0 or x.shape[0] == 0:
        raise DataError(f"{name} must have at least one row, got shape {x.shape}.")
    return x.astype(np.float32) if not np.issubdtype(x.dtype, np.floating) else x


def _apply(x_train, others, shift, scale) -> tuple:
    others = [np.asarray(x) for x in others]
    for i, x in enumerate(others, start=1):
        if x.shape[1:] != x_train.shape[1:]:
            raise ShapeError(
                f"array {i} has per-example shape {x.shape[1:]}, but the training array has "
                f"{x_train.shape[1:]}; all arrays must share feature dimensions."
            )
    out = [((x - shift) / scale).astype(x_train.dtype) for x in (x_train, *others)]
    return (*out, Stats(shift.astype(x_train.dtype), scale.astype(x_train.dtype)))


def standardize(x_train, *others, eps: float = 1e-8) -> tuple:
    """Centers and scales features to unit variance using training statistics.

    Constant features (std below ``eps``) are only centered, not divided by ~0.

    Args:
      x_train: training array ``(n, ...)``; statistics are taken over axis 0.
      *others: more arrays (validation, test) transformed with the same stats.
      eps: standard deviations below this count as zero.

    Returns:
      ``(x_train', *others', Stats(mean, std))``.

    Example:
      >>> x, stats = standardize(np.array([[1.0, 5.0], [3.0, 5.0]]))
      >>> x.tolist(), stats.std.tolist()
      ([[-1.0, 0.0], [1.0, 0.0]], [1.0, 1.0])
    """
    x_train = _as_float(x_train, "x_train")
    mean = x_train.mean(axis=0, dtype=np.float64)
    std = x_train.std(axis=0, dtype=np.float64)
    return _apply(x_train, others, mean, np.where(std < eps, 1.0, std))


def normalize(x_train, *others, eps: float = 1e-8) -> tuple:
    """Min-max scales features to [0, 1] using the training minimum and maximum.

    Other arrays may fall outside [0, 1] where they exceed the training range.

    Args:
      x_train: training array ``(n, ...)``; minimum and maximum are taken over axis 0.
      *others: more arrays (validation, test) transformed with the same stats.
      eps: ranges (``max - min``) below this count as zero: such constant
        features are only shifted by the minimum, not divided by ~0.

    Returns:
      ``(x_train', *others', Stats(min, max - min))``.

    Example:
      >>> x, y, stats = normalize(np.array([[0.0], [4.0]]), np.array([[2.0]]))
      >>> x.ravel().tolist(), y.ravel().tolist()
      ([0.0, 1.0], [0.5])
    """
    x_train = _as_float(x_train, "x_train")
    low = x_train.min(axis=0).astype(np.float64)
    span = x_train.max(axis=0).astype(np.float64) - low
    return _apply(x_train, others, low, np.where(span < eps, 1.0, span))


def one_hot(labels, num_classes: int | None = None, dtype=np.float32) -> np.ndarray:
    """One-hot encodes integer labels, checking they lie in ``[0, num_classes)``.

    Args:
      labels: an integer array of any shape ``S``.
      num_classes: the number of classes; None (default) uses ``labels.max() + 1``.
      dtype: the dtype of the result (default float32).

    Returns:
      An array of shape ``S + (num_classes,)``, 1 at each label and 0 elsewhere.

    Raises:
      DataError: labels that are not integers or lie outside ``[0, num_classes)``.

    Example:
      >>> one_hot(np.array([2, 0]), 3).tolist()
      [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"one_hot needs integer labels, got dtype {labels.dtype}.")
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"labels must lie in [0, {num_classes}), got range "
            f"[{labels.min()}, {labels.max()}]; pass the right num_classes."
        )
    return np.eye(num_classes, dtype=dtype)[labels]


def split_indices(
    n: int, fraction: float, seed: int = 0, stratify: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Returns sorted ``(keep, held_out)`` row indices, ``fraction`` held out.

    With ``stratify`` (class labels) each class keeps its proportion in both parts.
    The split is the one of scikit-learn's ``train_test_split(np.arange(n), ...)``.

    Args:
      n: the number of rows.
      fraction: the share of rows held out, strictly between 0 and 1
        (``ceil(fraction * n)`` rows).
      seed: the seed of the shuffle (``np.random.RandomState(seed)``).
      stratify: None, or class labels ``(n,)`` whose proportions both parts keep
        (each class needs at least 2 rows).

    Returns:
      ``(keep, held_out)``: two sorted int arrays of row indices that together
      cover ``range(n)``.

    Example:
      >>> keep, held = split_indices(10, 0.2, seed=0)
      >>> len(keep), len(held), sorted(set(keep) | set(held)) == list(range(10))
      (8, 2, True)
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"fraction must lie strictly between 0 and 1, got {fraction}.")
    from jaxnets.data.sklearn_split import train_test_indices

    try:
        keep, held = train_test_indices(n, fraction, seed, stratify)
    except ValueError as err:  # too few rows, or a class with a single member
        hint = (
            " or split without stratifying (train_val_split(..., stratify=False), "
            "split_indices(..., stratify=None))"
            if stratify is not None
            else ""
        )
        raise DataError(
            f"cannot hold out {fraction} of {n} rows: {str(err).rstrip('.')}. Use a larger dataset or "
            f"a different fraction{hint}."
        ) from err
    return np.sort(keep), np.sort(held)


def train_val_split(x, y, fraction: float = 0.1, seed: int = 0, stratify: bool = True) -> tuple:
    """Splits ``(x, y)`` into training and validation parts.

    Args:
      x: inputs ``(n, ...)``.
      y: targets ``(n, ...)``.
      fraction: share of rows that go to validation.
      seed: seed of the split.
      stratify: keep class proportions (needs integer class labels ``y`` of shape ``(n,)``).

    Returns:
      ``(x_train, y_train, x_val, y_val)``.

    Example:
      >>> x, y = np.arange(20.0).reshape(10, 2), np.array([0, 1] * 5)
      >>> xt, yt, xv, yv = train_val_split(x, y, 0.2)
      >>> xt.shape, xv.shape, sorted(yv.tolist())
      ((8, 2), (2, 2), [0, 1])
    """
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise DataError(f"x has {len(x)} rows but y has {len(y)}; they must match.")
    if stratify and (y.ndim != 1 or not np.issubdtype(y.dtype, np.integer)):
        raise DataError(
            f"stratify=True needs integer class labels of shape (n,), got {y.dtype} "
            f"{y.shape}; pass stratify=False for regression targets."
        )
    keep, held = split_indices(len(x), fraction, seed, y if stratify else None)
    return x[keep], y[keep], x[held], y[held]


def sequence_windows(tokens, seq_len: int, stride: int | None = None) -> tuple:
    """Cuts a token stream into ``(inputs, next-token targets)`` windows.

    Window ``i`` is ``tokens[i*stride : i*stride + seq_len]`` and its targets are
    the same slice shifted by one. A trailing part shorter than a window is dropped.

    Args:
      tokens: a 1-D array of token ids (or values) ``(L,)``.
      seq_len: the window length ``T``, ``>= 1``.
      stride: the step between window starts (default ``seq_len``: windows do
        not overlap); ``>= 1``.

    Returns:
      ``(inputs, targets)``, two arrays ``(N, T)`` of the dtype of ``tokens``.

    Example:
      >>> x, y = sequence_windows(np.arange(7), 3)
      >>> x.tolist(), y.tolist()
      ([[0, 1, 2], [3, 4, 5]], [[1, 2, 3], [4, 5, 6]])
    """
    tokens = np.asarray(tokens)
    stride = seq_len if stride is None else stride
    if tokens.ndim != 1:
        raise ShapeError(f"tokens must be 1-D, got shape {tokens.shape}.")
    if seq_len < 1 or stride < 1:
        raise ConfigError(f"seq_len and stride must be >= 1, got {seq_len} and {stride}.")
    count = max(0, (len(tokens) - 1 - seq_len) // stride + 1)
    starts = np.arange(count)[:, None] * stride + np.arange(seq_len)[None, :]
    return tokens[starts], tokens[starts + 1]
