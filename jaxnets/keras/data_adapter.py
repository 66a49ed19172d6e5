"""Turns what Keras's ``fit`` accepts into the batch dicts of `jaxnets.training`.

``x`` may be an array (with ``y``), a dict with ``x``/``y`` (and optionally
``weight``, ``x_mask``), or an iterable of ``(x, y)`` / ``(x, y, sample_weight)``
tuples or batch dicts. An iterable is read once (``steps`` batches if given):
each batch is padded to the largest batch's size with ``mask`` 0 rows, so the
functional loop, run unshuffled with that batch size, replays exactly these
batches with one compilation. A generator (or other iterable that is not a list
or tuple) given with ``steps`` is read again for every later epoch, ``steps``
new batches each time, as Keras does (`fresh_epochs`): augmented batches are
never replayed.

Example:
  >>> import numpy as np
  >>> batches = [(np.ones((4, 2)), np.zeros(4)), (np.ones((3, 2)), np.ones(3))]
  >>> arrays, batch_size = from_batches(batches)
  >>> batch_size, arrays["mask"].tolist()
  (4, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

import numpy as np

from jaxnets.data.batching import pad_to
from jaxnets.errors import ConfigError, DataError


def is_batch_iterable(x) -> bool:
    """True for iterables of batches (generators, lists of tuples), False for array-likes."""
    if x is None or isinstance(x, Mapping | str | bytes) or hasattr(x, "shape"):
        return False
    if isinstance(x, list | tuple):
        return bool(x) and isinstance(x[0], tuple | list | Mapping) and not _is_numeric_row(x[0])
    return isinstance(x, Iterable)


def _is_numeric_row(row) -> bool:
    # [[0.1, 0.2], [0.3, 0.4]] is an array; [(x_batch, y_batch), ...] is not.
    return isinstance(row, list | tuple) and all(isinstance(v, int | float) for v in row)


def unpack(batch) -> dict:
    """``(x,)``, ``(x, y)``, ``(x, y, sample_weight)`` or a dict -> a dict of numpy arrays."""
    if isinstance(batch, Mapping):
        out = dict(batch)
        if "sample_weight" in out:
            out["weight"] = out.pop("sample_weight")
    elif isinstance(batch, tuple | list) and 1 <= len(batch) <= 3:
        out = dict(zip(("x", "y", "weight"), batch, strict=False))
    else:
        out = {"x": batch}
    if "x" not in out:
        raise DataError(f"a batch needs an 'x' entry; got keys {sorted(out)}.")
    return {k: np.asarray(v) for k, v in out.items() if v is not None}


def from_batches(iterable, steps: int | None = None, size: int | None = None) -> tuple[dict, int]:
    """Reads (up to ``steps``) batches and pads each to the largest batch size.

    ``size``, if given, is the size to pad to (a larger batch is a `DataError`):
    later epochs of a generator keep the first epoch's batch size.

    Returns:
      ``(arrays, batch_size)``: the concatenated arrays with a ``mask`` that is
      0 on padding rows, and the common batch size.
    """
    if steps is not None and (not isinstance(steps, int) or steps <= 0):
        raise ConfigError(f"steps must be a positive integer, got {steps!r}.")
    source = iter(iterable)
    batches = [unpack(b) for b in (itertools.islice(source, steps) if steps else source)]
    if not batches:
        raise DataError("the iterable of batches is empty.")
    if steps is not None and len(batches) < steps:
        raise DataError(f"asked for {steps} batches but the iterable gave only {len(batches)}.")
    keys = set(batches[0])
    for b in batches:
        if set(b) != keys:
            raise DataError(
                f"every batch needs the same entries; got {sorted(keys)} and {sorted(b)}."
            )
    largest = max(len(b["x"]) for b in batches)
    if size is not None and largest > size:
        raise DataError(
            f"a batch of {largest} rows came after batches of at most {size}; every epoch's "
            "batches must fit the first epoch's batch size."
        )
    size = largest if size is None else size
    padded = [pad_to(b, size) for b in batches]
    arrays = {k: np.concatenate([b[k] for b in padded]) for k in padded[0]}
    return arrays, size


def fresh_epochs(x, steps: int | None, batch_size: int):
    """Each later epoch's data of an iterable that yields new batches, or None.

    Keras's ``fit(generator, steps_per_epoch=k)`` draws ``k`` new batches every
    epoch: an augmenting generator never repeats one. This returns a function
    ``epoch -> arrays`` that reads the next ``steps`` batches (from the same
    iterator, or from a new ``iter(x)`` for an iterable that is not its own
    iterator), padded to ``batch_size``, for `jaxnets.training.fit`'s
    ``epoch_data``. Lists and tuples of batches (the same each time) and
    iterables read to their end (no ``steps``) return None: their one read is
    replayed.

    Example:
      >>> import numpy as np
      >>> def batches():
      ...     for i in range(100):
      ...         yield np.full((2, 1), float(i)), np.zeros(2)
      >>> gen = batches()
      >>> first, size = from_batches(gen, steps=2)
      >>> later = fresh_epochs(gen, steps=2, batch_size=size)
      >>> first["x"].ravel().tolist(), later(1)["x"].ravel().tolist()
      ([0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0])
    """
    if steps is None or isinstance(x, list | tuple) or not is_batch_iterable(x):
        return None
    one_iterator = iter(x) is x

    def read(epoch):
        source = x if one_iterator else iter(x)
        return from_batches(source, steps, size=batch_size)[0]

    return read


def from_arrays(x, y=None, sample_weight=None) -> dict:
    """Arrays (or a dict with ``x``/``y``) -> one dict of numpy arrays."""
    if isinstance(x, Mapping):
        if y is not None:
            raise DataError("pass targets either inside the dict (key 'y') or as y=, not both.")
        arrays = unpack(x)
    else:
        arrays = {"x": np.asarray(x)}
        if y is not None:
            arrays["y"] = np.asarray(y)
    if sample_weight is not None:
        if "weight" in arrays:
            raise DataError("sample weights were given twice (dict key and sample_weight=).")
        arrays["weight"] = np.asarray(sample_weight, np.float32)
    return arrays


def class_weights(y: np.ndarray, class_weight: Mapping) -> np.ndarray:
    """Per-row weights ``class_weight[label]`` for integer, one-hot or binary targets."""
    y = np.asarray(y)
    labels = np.argmax(y, axis=-1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(len(y))
    labels = np.rint(labels).astype(np.int64)
    missing = sorted(set(np.unique(labels).tolist()) - set(int(k) for k in class_weight))
    if missing:
        raise DataError(f"class_weight has no entry for class(es) {missing}.")
    table = {int(k): float(v) for k, v in class_weight.items()}
    return np.array([table[int(c)] for c in labels], np.float32)


def add_class_weight(arrays: dict, class_weight) -> dict:
    """Multiplies ``class_weight[y]`` into the row weights of ``arrays``."""
    if not class_weight:
        return arrays
    if "y" not in arrays:
        raise DataError("class_weight needs targets y.")
    w = class_weights(arrays["y"], class_weight)
    arrays = dict(arrays)
    arrays["weight"] = w * arrays["weight"] if "weight" in arrays else w
    return arrays


def split_validation(arrays: dict, fraction: float) -> tuple[dict, dict]:
    """Keras's ``validation_split``: the last ``fraction`` of rows, taken before shuffling."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"validation_split must be in (0, 1), got {fraction}.")
    n = len(arrays["x"])
    split_at = int(np.floor(n * (1.0 - fraction)))
    if split_at == 0 or split_at == n:
        raise DataError(
            f"validation_split={fraction} leaves an empty split of {n} rows; change the fraction."
        )
    return (
        {k: v[:split_at] for k, v in arrays.items()},
        {k: v[split_at:] for k, v in arrays.items()},
    )


def prepare(x, y=None, sample_weight=None, class_weight=None, steps=None, batch_size=32):
    """Everything a loop needs: ``(arrays, batch_size, shuffle_allowed)``."""
    if is_batch_iterable(x):
        if y is not None or sample_weight is not None:
            raise DataError("an iterable of batches carries its own targets; do not pass y= too.")
        arrays, size = from_batches(x, steps)
        return add_class_weight(arrays, class_weight), size, False
    if steps is not None:
        raise ConfigError(
            "steps_per_epoch/steps apply to iterables of batches; with arrays use batch_size."
        )
    arrays = add_class_weight(from_arrays(x, y, sample_weight), class_weight)
    return arrays, batch_size, True
