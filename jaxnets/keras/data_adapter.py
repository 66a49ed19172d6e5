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
    if out.get("y") is not None:
        check_one_array("y", out["y"], "output", _rows(out["x"]))
        out["y"] = _one_target(out["y"])
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


def _rows(value) -> int | None:
    """The rows of an array (None for lists, dicts and None: not known without converting)."""
    return int(value.shape[0]) if hasattr(value, "shape") and np.ndim(value) >= 1 else None


def _parallel_arrays(value, rows: int | None) -> bool:
    """Whether ``value`` is a list or tuple of arrays with a row per example each:
    Keras's several inputs or outputs (``[x_a, x_b]``), not the rows of one array.

    ``rows`` is the number of examples, from the other argument (``x`` for ``y``),
    or None; then only arrays of different shapes (no one array) count.
    """
    if not isinstance(value, list | tuple) or len(value) < 2:
        return False
    if not all(hasattr(v, "shape") and np.ndim(v) >= 1 for v in value):
        return False
    lengths = {len(v) for v in value}
    if len(lengths) != 1:
        return False
    if rows is not None:
        return lengths == {rows} and len(value) != rows
    return len({np.shape(v) for v in value}) > 1


def check_one_array(name: str, value, role: str, rows: int | None = None):
    """`DataError` for Keras's several inputs or outputs: the loops batch one array.

    ``x`` (``role="input"``) or ``y`` (``role="output"``) given as a list of
    arrays (one per input or output, of ``rows`` rows each) or as a dict of
    several would otherwise fail inside numpy (a ragged array) or be stacked
    into one array of the wrong rows.

    Example:
      >>> import numpy as np
      >>> check_one_array("y", [np.zeros(4), np.zeros((4, 2))], "output", rows=4)
      Traceback (most recent call last):
      ...
      jaxnets.errors.DataError: y is a list of 2 arrays (one per output, as Keras takes for a model with several outputs); ...
      >>> check_one_array("y", [np.zeros(2)] * 3, "output", rows=3)  # 3 rows of 2: one array
    """
    several = _parallel_arrays(value, rows) or (isinstance(value, Mapping) and len(value) > 1)
    if not several:
        return
    if isinstance(value, Mapping):
        what = f"a dict with keys {sorted(value)}"
    else:
        what = f"a {type(value).__name__} of {len(value)} arrays"
    advice = {
        "input": "give the model one input array (concatenate the inputs and split them "
        "inside the module)",
        "output": "train one output array, or concatenate the targets into one array and "
        "compile with a jaxnets.losses.Loss whose fn(outputs, targets) scores every output",
    }[role]
    raise DataError(
        f"{name} is {what} (one per {role}, as Keras takes for a model with several "
        f"{role}s); jaxnets.Model's fit, evaluate and predict batch one {name} array: {advice}."
    )


def _one_target(y):
    """``y``, or the one entry of Keras's ``{"output_name": y}`` for a one-output model."""
    check_one_array("y", y, "output")
    if isinstance(y, Mapping) and len(y) == 1:
        return next(iter(y.values()))
    return y


def from_arrays(x, y=None, sample_weight=None) -> dict:
    """Arrays (or a dict with ``x``/``y``) -> one dict of numpy arrays."""
    if isinstance(x, Mapping) and "x" not in x and len(x) > 1:
        check_one_array("x", x, "input")  # a dict of named inputs, not of batch entries
    if isinstance(x, Mapping):
        if y is not None:
            raise DataError("pass targets either inside the dict (key 'y') or as y=, not both.")
        arrays = unpack(x)
    else:
        check_one_array("x", x, "input", _rows(y))
        check_one_array("y", y, "output", _rows(x))
        arrays = {"x": np.asarray(x)}
        if y is not None:
            arrays["y"] = np.asarray(_one_target(y))
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
