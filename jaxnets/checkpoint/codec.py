"""What a checkpoint holds, as plain data: flat arrays, JSON values and checksums.

A `jaxnets.training.TrainState` is stored as the flat dict of its array leaves
(`jaxnets.checkpoint.structure.flatten`), copied to host memory. Typed PRNG
keys become their ``jax.random.key_data`` (uint32) and are wrapped again with
the target's key implementation on restore. Everything else (epoch, position
in the epoch, history, callback state) is JSON: no pickle, so loading a
checkpoint never runs code. A CRC32 of every array, computed at save time,
catches a corrupted file that would otherwise load as silently wrong numbers.

Example:
  >>> import numpy as np
  >>> decode_json(encode_json({"acc": [np.float32(0.5)], "cm": np.eye(2, dtype=np.int32)}))
  {'acc': [0.5], 'cm': array([[1, 0],
         [0, 1]], dtype=int32)}
  >>> w = np.linspace(0, 1, 100, dtype=np.float32).reshape(4, 25)  # large: stored as bytes
  >>> back = decode_json(encode_json(w))
  >>> back.dtype, back.shape, bool((back == w).all())
  (dtype('float32'), (4, 25), True)
"""

from __future__ import annotations

import base64
import dataclasses
import math
import zlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxnets.checkpoint.structure import flatten
from jaxnets.errors import CheckpointError

FORMAT = "jaxnets.checkpoint/1"
# The TrainState fields that change during training; the static ones (apply_fn,
# tx, loss, metrics) are configuration and come from the restore target. The
# float16 loss scale is None (no leaves) at other precisions, and model
# hyperparameters are an empty dict (no leaves) unless some were set.
STATE_FIELDS = (
    "step", "params", "model_state", "opt_state", "rng", "skipped", "loss_scale", "hparams",
)  # fmt: skip
_ARRAY_TAG = "__ndarray__"
# Arrays above this many elements are stored as base64 of their little-endian bytes
# (a third larger than binary) instead of a list of numbers (~5x larger, slow to parse):
# EarlyStopping(restore_best_weights=True) keeps a whole copy of the model's weights.
_BYTES_TAG = "__ndarray_bytes__"
_LIST_MAX_SIZE = 64


def is_prng_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def state_leaves(state) -> dict[str, Any]:
    """The flat ``{path: array}`` of a TrainState's changing fields (keys still typed)."""
    return flatten({name: getattr(state, name) for name in STATE_FIELDS})


def key_impls(flat: Mapping[str, Any]) -> dict[str, str]:
    """``{path: implementation name}`` of the typed PRNG keys in a flat dict."""
    return {p: str(jax.random.key_impl(x)) for p, x in flat.items() if is_prng_key(x)}


def expected_specs(flat: Mapping[str, Any]) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes and dtypes as stored: typed keys as their uint32 key data."""
    out = {}
    for path, x in flat.items():
        if is_prng_key(x):
            x = jax.eval_shape(jax.random.key_data, x)
        dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
        out[path] = jax.ShapeDtypeStruct(np.shape(x), dtype)
    return out


def to_host(flat: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Private host copies (typed keys as key data).

    The copies matter: the training step donates the state's buffers, and on
    CPU ``device_get`` may return a view of them.
    """
    out = {}
    for path, x in flat.items():
        if is_prng_key(x):
            x = jax.random.key_data(x)
        out[path] = np.array(jax.device_get(x), copy=True)
    return out


def checksum(x: np.ndarray) -> str:
    return format(zlib.crc32(np.ascontiguousarray(x).tobytes()), "08x")


def checksums(flat: Mapping[str, np.ndarray]) -> dict[str, str]:
    return {path: checksum(x) for path, x in flat.items()}


def verify(flat: Mapping[str, np.ndarray], expected: Mapping[str, str]) -> list[str]:
    """Paths whose data differ from the checksums written at save time."""
    return sorted(p for p, c in expected.items() if p in flat and checksum(flat[p]) != c)


def place_like(flat: Mapping[str, np.ndarray], template: Mapping[str, Any]) -> dict[str, Any]:
    """Device arrays from host arrays, re-wrapping PRNG keys and keeping template shardings."""
    out = {}
    for path, t in template.items():
        x = flat[path]
        sharding = getattr(t, "sharding", None) if isinstance(t, jax.Array) else None
        x = jax.device_put(x, sharding) if sharding is not None else jax.device_put(x)
        if is_prng_key(t):
            x = jax.random.wrap_key_data(x, impl=jax.random.key_impl(t))
        out[path] = x
    return out


def encode_json(obj, where: str = "value"):
    """JSON-able copy of ``obj``: numpy scalars to Python, arrays tagged with their dtype.

    Raises `CheckpointError` naming ``where`` for anything else (objects, functions...).
    """
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (np.ndarray, jax.Array)):
        arr = np.asarray(obj)
        if arr.size <= _LIST_MAX_SIZE:
            return {_ARRAY_TAG: arr.tolist(), "dtype": arr.dtype.name}
        data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
        return {
            _BYTES_TAG: base64.b64encode(data).decode("ascii"),
            "dtype": arr.dtype.name,
            "shape": list(arr.shape),
        }
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise CheckpointError(f"{where} has a non-string key {k!r}; JSON needs strings.")
            out[k] = encode_json(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [encode_json(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise CheckpointError(
        f"{where} is a {type(obj).__name__}; checkpoints store only JSON values "
        "(numbers, strings, lists, dicts) and arrays. Return such values from get_state()."
    )


def decode_json(obj):
    """The inverse of `encode_json` (tuples come back as lists)."""
    if isinstance(obj, Mapping):
        if _ARRAY_TAG in obj:
            return np.asarray(obj[_ARRAY_TAG], dtype=obj["dtype"])
        if _BYTES_TAG in obj:
            dtype = np.dtype(obj["dtype"]).newbyteorder("<")
            data = np.frombuffer(base64.b64decode(obj[_BYTES_TAG]), dtype=dtype)
            return data.reshape(obj["shape"]).astype(dtype.newbyteorder("="))
        return {k: decode_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_json(v) for v in obj]
    return obj


def callback_key(index: int, callback) -> str:
    """How a callback's state is filed: its position and class name, e.g. ``0:EarlyStopping``."""
    return f"{index}:{type(callback).__name__}"


def callback_states(callbacks) -> dict[str, Any]:
    """Each callback's ``get_state()``, encoded; callbacks without state are left out."""
    out = {}
    for i, cb in enumerate(callbacks or ()):
        state = cb.get_state() if hasattr(cb, "get_state") else {}
        if state:
            key = callback_key(i, cb)
            out[key] = encode_json(state, f"callback {key} state")
    return out


def monitored_value(logs: Mapping | None, monitor: str | None) -> float | None:
    """The monitored metric as a float, or None where absent or not a scalar."""
    if not logs or monitor is None or monitor not in logs:
        return None
    value = np.asarray(logs[monitor])
    if value.ndim:
        return None
    return float(value)


def rank_value(metrics: Mapping | None, monitor: str, mode: str) -> float:
    """The score orbax ranks checkpoints by (higher is better) with NaN ranked worst.

    Orbax sorts by ``best_fn`` with Python's ``sorted``; a NaN compares false
    with everything, so it could land anywhere, "best" included. Mapping NaN
    (and a missing value) to -inf makes it always the worst.

    Example:
      >>> rank_value({"val_loss": float("nan")}, "val_loss", "min")
      -inf
      >>> rank_value({"val_loss": 0.25}, "val_loss", "min")
      -0.25
    """
    value = None if metrics is None else metrics.get(monitor)
    if value is None or math.isnan(float(value)):
        return -math.inf
    return float(value) if mode == "max" else -float(value)


@dataclasses.dataclass
class RunState:
    """What `CheckpointManager.restore` returns.

    Attributes:
      state: the restored `TrainState` (static fields from the target).
      step: the checkpoint's step (``state.step``).
      epoch, step_in_epoch: where training continues (``fit``'s
        ``initial_epoch`` and ``initial_step``).
      history: per-epoch metrics of the finished epochs.
      callback_states: ``{"<index>:<class>": state}`` as saved.
      sums: flat host arrays of a half-done epoch's metric sums, or None.
      data: the data order: ``seed``, ``shuffle``, ``batch_size``, ``num_examples``.
      stopped: whether a callback had stopped training.
      metrics: the monitored metric saved with the step (may be empty).
      skipped_at_epoch_start: for a mid-epoch step, the count of skipped updates
        when its epoch began (None otherwise, and in older checkpoints).

    Example:
      >>> import tempfile, jax.numpy as jnp, flax.linen as nn
      >>> from jaxnets.checkpoint import CheckpointManager
      >>> from jaxnets.training import create_train_state
      >>> state = create_train_state(nn.Dense(2), "sgd", jnp.zeros((1, 3)), learning_rate=0.1)
      >>> with tempfile.TemporaryDirectory() as tmp, CheckpointManager(tmp) as mngr:
      ...     _ = mngr.save(state, epoch=2, history={"loss": [0.9, 0.7]})
      ...     run = mngr.restore(state)
      >>> run.step, run.epoch, run.step_in_epoch, run.history, run.stopped
      (0, 2, 0, {'loss': [0.9, 0.7]}, False)
    """

    state: Any
    step: int
    epoch: int
    step_in_epoch: int
    history: dict
    callback_states: dict
    sums: dict | None
    data: dict
    stopped: bool
    metrics: dict
    skipped_at_epoch_start: int | None = None

    def apply_callback_states(self, callbacks):
        """Calls ``set_state`` on each callback saved under the same index and class."""
        for i, cb in enumerate(callbacks or ()):
            key = callback_key(i, cb)
            if key in self.callback_states:
                cb.set_state(self.callback_states[key])
