"""The data `fit`, `evaluate` and `predict` take, as a dict of numpy arrays.

Example:
  >>> import numpy as np
  >>> sorted(as_arrays((np.zeros((2, 3)), np.arange(2))))
  ['x', 'y']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from jaxnets import validation
from jaxnets.errors import ConfigError, DataError


def as_arrays(data, *, need_targets: bool = True) -> dict[str, np.ndarray]:
    """Normalizes ``(x, y)``, ``(x, y, weight)`` or a dict with ``x``/``y`` to a dict.

    Raises a `jaxnets.errors.DataError` naming the problem for empty data,
    missing targets or arrays of different lengths.

    Args:
      data: a tuple/list ``(x,)``, ``(x, y)`` or ``(x, y, weight)``; a dict
        with ``x`` (and ``y``, ``weight``, ``x_mask``...); or a single array,
        taken as ``x``. Entries that are None are dropped.
      need_targets: require a ``y`` (True, for training and evaluation); False
        for inputs alone (prediction).

    Returns:
      A dict of numpy arrays (``x``, and ``y``, ``weight``... where given),
      all with the same number of rows.

    Example:
      >>> import numpy as np
      >>> from jaxnets.training.inputs import as_arrays
      >>> arrays = as_arrays((np.zeros((4, 3)), np.arange(4), np.ones(4)))
      >>> sorted(arrays), arrays["x"].shape
      (['weight', 'x', 'y'], (4, 3))
      >>> as_arrays((np.zeros((4, 3)), np.arange(3)))
      Traceback (most recent call last):
      ...
      jaxnets.errors.DataError: every array needs the same number of rows ...
    """
    if isinstance(data, Mapping):
        arrays = dict(data)
    elif isinstance(data, Sequence) and not isinstance(data, str) and 1 <= len(data) <= 3:
        arrays = dict(zip(("x", "y", "weight"), data, strict=False))
    else:
        arrays = {"x": data}
    if "x" not in arrays:
        raise DataError(f"data needs an 'x' entry; got keys {sorted(arrays)}.")
    if need_targets and arrays.get("y") is None:
        raise DataError(
            "training and evaluation need targets: pass (x, y) or {'x': ..., 'y': ...}."
        )
    nested = sorted(k for k in ("x", "y") if isinstance(arrays.get(k), Mapping))
    if nested:
        raise DataError(
            f"{' and '.join(nested)} must each be one array with a row per example; got a "
            "dict of arrays. fit, evaluate and predict batch one "
            "input array (models with several inputs can take them concatenated and split them "
            "inside); train_step and eval_step accept any pytree in your own loop."
        )
    arrays = {k: validation.to_numpy(k, v) for k, v in arrays.items() if v is not None}
    validation.check_rows(arrays)
    return arrays


def check_positive_int(name: str, value) -> None:
    """Raises a `ConfigError` unless ``value`` (the option ``name``) is an integer >= 1.

    Example:
      >>> check_positive_int("epochs", 3)
      >>> check_positive_int("epochs", 0)
      Traceback (most recent call last):
      ...
      jaxnets.errors.ConfigError: epochs must be a positive integer, got 0.
    """
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
