"""Fixed-size, resumable minibatches of dicts of numpy arrays.

Every batch has exactly ``batch_size`` rows, so a jit-compiled step compiles
once: the last partial batch is padded by repeating a real row (row 0, or the
first all-finite row when row 0 holds NaN or Inf: see `padding_row`) and its
padding rows get ``mask == 0``. The shuffle of epoch ``e`` is
``np.random.default_rng([shuffle_seed, e]).permutation(n)``, a pure function of
``(shuffle_seed, e)``, so a run restarted at ``(epoch, start_step)`` sees the
very batches it would have seen.

Example:
  >>> import numpy as np
  >>> from jaxnets.data.batching import iterate_batches
  >>> batches = list(iterate_batches({"x": np.arange(5)}, 2))
  >>> [b["x"].tolist() for b in batches]
  [[0, 1], [2, 3], [4, 0]]
  >>> batches[-1]["mask"].tolist()
  [1.0, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from jaxnets.errors import ConfigError, DataError, ShapeError

_ROW_KEYS = ("mask", "weight")


def num_batches(n: int, batch_size: int, drop_remainder: bool = False) -> int:
    """Batches per epoch: ``ceil(n / batch_size)``, or ``floor`` with ``drop_remainder``.

    Args:
      n: the number of rows (``>= 0``).
      batch_size: rows per batch, a positive int.
      drop_remainder: count only full batches (the last partial one is dropped).

    Returns:
      The number of batches, an int.

    Example:
      >>> num_batches(10, 4), num_batches(10, 4, drop_remainder=True)
      (3, 2)
    """
    _check_batch_size(batch_size)
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}.")
    return n // batch_size if drop_remainder else math.ceil(n / batch_size)


def _check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise ConfigError(f"batch_size must be an int, got {type(batch_size).__name__}.")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")


def _check_arrays(arrays: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    if not isinstance(arrays, Mapping) or not arrays:
        raise DataError("arrays must be a non-empty dict of arrays, e.g. {'x': x, 'y': y}.")
    out = {key: np.asarray(value) for key, value in arrays.items()}
    sizes = {key: (v.shape[0] if v.ndim else None) for key, v in out.items()}
    n = next(iter(sizes.values()))
    if any(s != n for s in sizes.values()) or n is None:
        raise ShapeError(f"all arrays need the same number of rows (axis 0), got {sizes}.")
    for key in _ROW_KEYS:
        if key in out and out[key].shape != (n,):
            raise ShapeError(f"{key!r} must have shape ({n},), got {out[key].shape}.")
    return out, n


def padding_row(arrays: Mapping[str, np.ndarray]) -> int:
    """The row that padding repeats: row 0, or the first row whose floats are all finite.

    Padding rows are masked out of losses and metrics, but a masked NaN still
    poisons them (``NaN * 0`` is NaN, in the loss and in its gradient), so a
    non-finite row 0 (data passed with ``allow_nonfinite=True``) must not be
    copied into the padding of other batches. Only when row 0 is not finite
    are the other rows scanned; with no finite row at all, row 0 is used.

    Args:
      arrays: a dict of arrays with equal row counts (axis 0), at least one row.

    Returns:
      The row index, an int.

    Example:
      >>> x = np.array([[np.nan, 1.0], [np.inf, 2.0], [3.0, 4.0]])
      >>> padding_row({"x": x, "y": np.arange(3)}), padding_row({"x": x[2:]})
      (2, 0)
    """
    floats = [
        np.asarray(v) for v in arrays.values() if np.issubdtype(np.asarray(v).dtype, np.inexact)
    ]
    if all(np.isfinite(v[:1]).all() for v in floats):
        return 0
    n = len(floats[0])
    finite = np.ones(n, bool)
    for v in floats:
        finite &= np.isfinite(v.reshape(n, -1)).all(axis=1)
    return int(np.argmax(finite)) if finite.any() else 0


def pad_to(arrays, size: int):
    """Pads rows up to ``size`` by repeating row 0 (or the first finite row: `padding_row`).

    A dict gets a float32 ``mask`` (1.0 real, 0.0 padding; multiplied into an
    existing ``mask``) and padded ``weight`` rows set to 0. A single array is
    just padded.

    Args:
      arrays: a dict of arrays with equal row counts (axis 0; ``mask``/``weight``
        of shape ``(n,)`` if present), or a single array; at least one row.
      size: the number of rows wanted, ``>= n``.

    Returns:
      The padded dict (plus ``mask`` float32 ``(size,)``), or the padded array.

    Example:
      >>> out = pad_to({"x": np.array([[1, 2], [3, 4]])}, 3)
      >>> out["x"].tolist(), out["mask"].tolist()
      ([[1, 2], [3, 4], [1, 2]], [1.0, 1.0, 0.0])
    """
    if not isinstance(arrays, Mapping):
        return pad_to({"x": arrays}, size)["x"]
    arrays, n = _check_arrays(arrays)
    if n == 0 or size < n:
        raise ShapeError(f"cannot pad {n} rows to {size}; need 1 <= rows <= size.")
    pad = np.full(size - n, padding_row(arrays), dtype=np.int64)
    index = np.concatenate([np.arange(n), pad])
    valid = (np.arange(size) < n).astype(np.float32)
    return _take(arrays, index, valid)


def _take(arrays: dict[str, np.ndarray], index: np.ndarray, valid: np.ndarray) -> dict:
    out = {key: value[index] for key, value in arrays.items()}
    out["mask"] = valid * out["mask"].astype(np.float32) if "mask" in out else valid
    if "weight" in out:
        out["weight"] = np.where(valid > 0, out["weight"], 0).astype(out["weight"].dtype)
    return out


def epoch_order(n: int, shuffle_seed: int | None, epoch: int) -> np.ndarray:
    """Row order of one epoch: identity, or the ``(shuffle_seed, epoch)`` permutation.

    Args:
      n: the number of rows.
      shuffle_seed: None keeps the order ``arange(n)``; an int ``>= 0`` seeds
        ``np.random.default_rng([shuffle_seed, epoch])``.
      epoch: the epoch number (``>= 0``), selecting the permutation.

    Returns:
      An int array ``(n,)``: the row indices in the order they are visited.

    Example:
      >>> epoch_order(4, None, 3).tolist()
      [0, 1, 2, 3]
      >>> bool((epoch_order(50, 1, 0) == epoch_order(50, 1, 0)).all())
      True
    """
    if shuffle_seed is None:
        return np.arange(n)
    if shuffle_seed < 0 or epoch < 0:
        raise ConfigError(f"shuffle_seed and epoch must be >= 0, got {shuffle_seed}, {epoch}.")
    return np.random.default_rng([int(shuffle_seed), int(epoch)]).permutation(n)


def iterate_batches(
    arrays: Mapping[str, np.ndarray],
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    epoch: int = 0,
    start_step: int = 0,
    drop_remainder: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
    """Yields one epoch of batches, each exactly ``batch_size`` rows.

    Args:
      arrays: dict of arrays with equal row counts (``x``, ``y``, and optionally
        ``mask``/``weight`` of shape ``(n,)``, ``x_mask`` ``(n, T)``...).
      batch_size: rows per batch.
      shuffle_seed: None keeps the given order; an int shuffles with the
        ``(shuffle_seed, epoch)`` permutation.
      epoch: epoch number (selects the permutation).
      start_step: skip this many batches of the epoch (resume mid-epoch).
      drop_remainder: drop the last partial batch instead of padding it.

    Yields:
      Dicts with the same keys (rows permuted together) plus ``mask`` float32
      ``(batch_size,)``: 1.0 for real rows, 0.0 for padding.

    Example:
      >>> x = np.arange(10)
      >>> full = [b["x"].tolist() for b in iterate_batches({"x": x}, 4, shuffle_seed=0)]
      >>> rest = [b["x"].tolist() for b in iterate_batches({"x": x}, 4, shuffle_seed=0, start_step=1)]
      >>> rest == full[1:]
      True
    """
    _check_batch_size(batch_size)
    arrays, n = _check_arrays(arrays)
    steps = num_batches(n, batch_size, drop_remainder)
    if isinstance(start_step, bool) or not 0 <= start_step <= steps:
        raise ConfigError(f"start_step must lie in [0, {steps}] for {n} rows, got {start_step}.")
    order = epoch_order(n, shuffle_seed, epoch)
    pad = padding_row(arrays) if n % batch_size and not drop_remainder else 0
    for step in range(start_step, steps):
        index = order[step * batch_size : (step + 1) * batch_size]
        real = len(index)
        if real < batch_size:
            index = np.concatenate([index, np.full(batch_size - real, pad, dtype=index.dtype)])
        valid = (np.arange(batch_size) < real).astype(np.float32)
        yield _take(arrays, index, valid)


def mask_extents(x_mask) -> np.ndarray:
    """Per row, the steps a bucket must keep: one past the last valid step of ``x_mask``.

    Not the count of valid steps: a sequence padded at the front
    (``pad_sequences(padding="pre")``) or with gaps keeps its valid steps at the
    end, and cutting it to its count would keep only padding. A row with no
    valid step gets 0.

    Args:
      x_mask: ``(n, T)`` mask of the valid steps (bool, or numbers where nonzero is valid).

    Returns:
      An int array ``(n,)``.

    Example:
      >>> mask_extents(np.array([[1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]])).tolist()
      [2, 4, 0]
    """
    valid = np.asarray(x_mask).astype(bool)
    if valid.ndim != 2:
        raise ShapeError(f"x_mask must have shape (n, T), got {valid.shape}.")
    last = valid.shape[1] - np.argmax(valid[:, ::-1], axis=1)
    return np.where(valid.any(axis=1), last, 0)


def bucket_by_length(lengths: Sequence[int], boundaries: Sequence[int]) -> dict[int, np.ndarray]:
    """Groups example indices by the smallest boundary that fits their length.

    Args:
      lengths: length of each example.
      boundaries: increasing bucket lengths; examples longer than the last one
        go to a bucket of length ``max(lengths)``.

    Returns:
      ``{bucket_length: sorted example indices}`` for non-empty buckets.

    Example:
      >>> bucket_by_length([3, 9, 4, 12], [4, 8])
      {4: array([0, 2]), 12: array([1, 3])}
    """
    lengths = np.asarray(lengths)
    bounds = np.asarray(boundaries)
    if lengths.ndim != 1 or bounds.ndim != 1 or not len(bounds):
        raise ShapeError("lengths and boundaries must be non-empty 1-D sequences.")
    if np.any(np.diff(bounds) <= 0) or bounds[0] < 1:
        raise ConfigError(f"boundaries must be positive and increasing, got {bounds.tolist()}.")
    edges = np.append(bounds, max(int(lengths.max(initial=0)), int(bounds[-1]) + 1))
    which = np.searchsorted(bounds, lengths, side="left")
    out = {}
    for b in np.unique(which):
        out[int(edges[b])] = np.flatnonzero(which == b)
    return out


def iterate_bucketed(
    arrays: Mapping[str, np.ndarray],
    lengths: Sequence[int],
    boundaries: Sequence[int],
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    epoch: int = 0,
    start_step: int = 0,
    seq_keys: Sequence[str] = ("x", "x_mask"),
) -> Iterator[dict[str, np.ndarray]]:
    """Like `iterate_batches`, but each batch holds one length bucket and its
    ``seq_keys`` arrays (axis 1) are cut to the bucket length.

    Batches of all buckets are interleaved in an order fixed by
    ``(shuffle_seed, epoch)``; ``start_step`` resumes within it.

    Args:
      arrays: dict of arrays with equal row counts, as in `iterate_batches`.
      lengths: the length of each example (one per row), used to bucket it.
      boundaries: increasing bucket lengths, as in `bucket_by_length`.
      batch_size: rows per batch; a bucket's last partial batch is padded
        (`pad_to`: a real row repeated, ``mask`` 0.0), never dropped.
      shuffle_seed: None keeps each bucket's rows in order and the buckets
        shortest first; an int shuffles the rows within each bucket and the
        order of all batches, as a function of ``(shuffle_seed, epoch)``.
      epoch: epoch number (selects the permutation).
      start_step: skip this many batches of the epoch's plan (resume mid-epoch).
      seq_keys: keys whose arrays have a time axis 1 to cut to the bucket
        length (other keys are kept whole).

    Yields:
      Dicts with the same keys plus ``mask`` float32 ``(batch_size,)``;
      ``seq_keys`` arrays are ``(batch_size, bucket_length, ...)``.

    Example:
      >>> x = np.zeros((4, 10)); lengths = [2, 9, 3, 10]
      >>> [b["x"].shape for b in iterate_bucketed({"x": x}, lengths, [4], 2)]
      [(2, 4), (2, 10)]
    """
    _check_batch_size(batch_size)
    arrays, n = _check_arrays(arrays)
    if len(lengths) != n:
        raise ShapeError(f"lengths has {len(lengths)} entries for {n} rows.")
    plan = []
    for b, (size, index) in enumerate(sorted(bucket_by_length(lengths, boundaries).items())):
        seed = None if shuffle_seed is None else [int(shuffle_seed), int(epoch), b + 1]
        if seed is not None:
            index = index[np.random.default_rng(seed).permutation(len(index))]
        plan += [(size, index[i : i + batch_size]) for i in range(0, len(index), batch_size)]
    if shuffle_seed is not None:
        plan = [plan[i] for i in epoch_order(len(plan), shuffle_seed, epoch)]
    if not 0 <= start_step <= len(plan):
        raise ConfigError(f"start_step must lie in [0, {len(plan)}], got {start_step}.")
    for size, index in plan[start_step:]:
        chunk = {k: (v[:, :size] if k in seq_keys else v) for k, v in arrays.items()}
        yield pad_to({k: v[index] for k, v in chunk.items()}, batch_size)
