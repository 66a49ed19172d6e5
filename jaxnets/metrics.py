"""Metrics as on-device accumulators: sums and counts, divided once at the end.

A metric's ``update(preds, labels, weights)`` returns a pytree of sums for one
batch; sums from many batches are merged by adding them (`merge`), and
``compute`` turns the total into a number once. This is exact for uneven, padded
last batches, where a mean of per-batch means is not (big_vision's evaluators
work the same way). ``weights`` is the row mask (0 for padding), multiplied by
sample weights where there are any.

``preds`` are class probabilities `(B, C)` for classifiers and raw outputs for
regression; ``labels`` are integer labels `(B,)` or regression targets (see
`jaxnets.losses.Loss.predictions` and ``.labels``). Class metrics also take
scores `(B, ..., C)` with labels `(B, ...)` (multi-label outputs, pixels):
every label counts once, with its example's weight.

This module holds the registry (`get`, `names`), the simple metrics and the
arithmetic on accumulators (`merge`, `compute_all`, `compute_members`). The
metrics counted in a confusion matrix or at thresholds (`ConfusionMatrix`,
`PrecisionRecallF1`, `Precision`, `Recall`, `AUC`) live in
`jaxnets.metrics_classification`; this module re-exports them.

Example:
  >>> import jax.numpy as jnp
  >>> from jaxnets import metrics
  >>> acc = metrics.get("accuracy")
  >>> a = acc.update(jnp.array([[0.9, 0.1], [0.2, 0.8]]), jnp.array([0, 0]), jnp.ones(2))
  >>> b = acc.update(jnp.array([[0.6, 0.4], [0.0, 1.0]]), jnp.array([0, 1]), jnp.array([1.0, 0.0]))
  >>> float(acc.compute(metrics.merge(a, b)))
  0.6666666...
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets import compile as compile_lib
from jaxnets.errors import ConfigError, lookup
from jaxnets.metrics_classification import (  # noqa: F401  (re-exported: jaxnets.metrics.<name>)
    AUC,
    ConfusionMatrix,
    Precision,
    PrecisionRecallF1,
    Recall,
)
from jaxnets.metrics_rows import _label_rows

# sklearn.metrics.log_loss clips probabilities to [eps, 1 - eps] with eps the machine
# epsilon of their dtype (np.finfo(y_proba.dtype).eps): 1.19e-7 for float32. `LogLoss`
# does the same with the dtype of its predictions, so a probability of exactly 0 costs
# -log(eps) in both.


def merge(a, b):
    """Adds two accumulators (pytrees of sums) leaf by leaf.

    Args:
      a: an accumulator, e.g. a metric's ``update`` sums (or a dict of them).
      b: an accumulator of the same tree structure and leaf shapes.

    Returns:
      The leaf-wise sum ``a + b``, of the same structure.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.metrics import Accuracy, merge
      >>> acc = Accuracy()
      >>> a = acc.update(jnp.array([[0.9, 0.1], [0.2, 0.8]]), jnp.array([0, 0]), jnp.ones(2))
      >>> b = acc.update(jnp.array([[0.3, 0.7]]), jnp.array([1]), jnp.ones(1))
      >>> total = merge(a, b)  # 1 of 2 right, then 1 of 1
      >>> float(total["correct"]), float(total["count"])
      (2.0, 3.0)
      >>> round(float(acc.compute(total)), 4)  # 2 / 3, not the mean of means (0.5 + 1) / 2
      0.6667
    """
    return jax.tree.map(jnp.add, a, b)


@dataclasses.dataclass(frozen=True)
class Accuracy:
    """Fraction of rows whose arg-max class equals the label.

    A multi-label binary classifier (labels `(B, K)`, scores `(B, K, 2)`)
    counts each of its `K` labels (Keras's ``binary_accuracy``), or with
    ``multi_label="argmax"`` compares the highest-scored label with the first
    true one, one per example: what Keras's ``compile(metrics=["accuracy"])``
    picks for `K > 1` sigmoid outputs (its ``categorical_accuracy``).

    Attributes:
      name: the key in logs.
      multi_label: ``"each"`` (default) or ``"argmax"``, for labels `(B, K)`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.metrics import Accuracy
      >>> preds = jnp.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
      >>> labels = jnp.array([0, 1, 1, 1])  # the last row is wrong
      >>> sums = Accuracy().update(preds, labels, jnp.ones(4))
      >>> {k: float(v) for k, v in sums.items()}, float(Accuracy().compute(sums))
      ({'correct': 3.0, 'count': 4.0}, 0.75)
      >>> padded = Accuracy().update(preds, labels, jnp.array([1.0, 1.0, 1.0, 0.0]))
      >>> float(Accuracy().compute(padded))  # weight 0 leaves the last row out
      1.0
      >>> p1 = jnp.array([[0.9, 0.8, 0.1], [0.2, 0.4, 0.7]])  # 2 examples, 3 labels
      >>> multi = jnp.stack([1 - p1, p1], axis=-1)
      >>> targets = jnp.array([[1, 0, 0], [0, 1, 1]])  # 4 of 6 labels right; both arg-maxes
      >>> float(Accuracy().compute(Accuracy().update(multi, targets, jnp.ones(2))))
      0.6666666...
      >>> keras_acc = Accuracy(multi_label="argmax")
      >>> float(keras_acc.compute(keras_acc.update(multi, targets, jnp.ones(2))))
      0.5
    """

    name: str = "accuracy"
    multi_label: str = "each"

    def __post_init__(self):
        if self.multi_label not in ("each", "argmax"):
            raise ConfigError(f"multi_label must be 'each' or 'argmax', got {self.multi_label!r}.")

    def update(self, preds, labels, weights):
        if self.multi_label == "argmax" and preds.ndim == 3 and labels.ndim == 2:
            # Keras's categorical_accuracy on multi-hot targets: argmax picks the first 1.
            correct = jnp.argmax(preds[..., 1], axis=-1) == jnp.argmax(labels, axis=-1)
        else:
            preds, labels, weights = _label_rows(preds, labels, weights)
            correct = jnp.argmax(preds, axis=-1) == labels
        correct = correct.astype(jnp.float32)
        return {"correct": jnp.sum(correct * weights), "count": jnp.sum(weights)}

    def compute(self, acc):
        return acc["correct"] / jnp.maximum(acc["count"], 1e-12)


@dataclasses.dataclass(frozen=True)
class TopKAccuracy:
    """Fraction of rows whose label is among the ``k`` highest-scored classes.

    A tie counts in the label's favour: the label is a hit when fewer than ``k``
    classes score strictly higher.

    Attributes:
      k: the number of top-scored classes that count as a hit (default 5).
      name: the key in logs.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.metrics import TopKAccuracy
      >>> preds = jnp.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]])
      >>> labels = jnp.array([0, 1, 0, 2])  # label ranks 1st, 2nd, 3rd, 2nd
      >>> top2 = TopKAccuracy(k=2)
      >>> float(top2.compute(top2.update(preds, labels, jnp.ones(4))))
      0.75
    """

    k: int = 5
    name: str = "top_k_accuracy"

    def __post_init__(self):
        if not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"k must be an integer >= 1, got {self.k!r}.")

    def update(self, preds, labels, weights):
        preds, labels, weights = _label_rows(preds, labels, weights)
        # A class is in the top k when fewer than k classes score strictly higher.
        label_score = jnp.take_along_axis(preds, labels[:, None].astype(jnp.int32), axis=-1)
        rank = jnp.sum(preds > label_score, axis=-1)
        hit = (rank < self.k).astype(jnp.float32)
        return {"correct": jnp.sum(hit * weights), "count": jnp.sum(weights)}

    compute = Accuracy.compute


@dataclasses.dataclass(frozen=True)
class LogLoss:
    """Mean negative log-probability of the true class (sklearn's ``log_loss``).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.metrics import LogLoss
      >>> preds, labels = jnp.array([[0.5, 0.5], [0.2, 0.8]]), jnp.array([0, 1])
      >>> sums = LogLoss().update(preds, labels, jnp.ones(2))
      >>> round(float(LogLoss().compute(sums)), 4)  # (-log 0.5 - log 0.8) / 2
      0.4581
    """

    name: str = "log_loss"

    def update(self, preds, labels, weights):
        preds, labels, weights = _label_rows(preds, labels, weights)
        p = preds / jnp.sum(preds, axis=-1, keepdims=True)
        p_true = jnp.take_along_axis(p, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
        eps = jnp.finfo(p_true.dtype).eps
        nll = -jnp.log(jnp.clip(p_true, eps, 1 - eps))
        return {"total": jnp.sum(nll * weights), "count": jnp.sum(weights)}

    def compute(self, acc):
        return acc["total"] / jnp.maximum(acc["count"], 1e-12)


@dataclasses.dataclass(frozen=True)
class MeanError:
    """Mean squared (``power=2``) or absolute (``power=1``) error over all outputs.

    Each row's error is averaged over its outputs, then rows are averaged with their weights.
    A classifier's class probabilities `(B, ..., C)` with integer labels `(B, ...)`
    are compared with the one-hot labels (for a binary classifier, `(p - y)**2`:
    the Brier score), as Keras's ``metrics=["mse"]`` compares them with the targets.

    Attributes:
      power: 2 (default) for the squared error; any other value gives the
        absolute error (use 1).
      name: the key in logs.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.metrics import MeanError
      >>> preds, targets = jnp.array([[1.0], [2.0]]), jnp.array([0.0, 4.0])  # errors 1, -2
      >>> mse, mae = MeanError(), MeanError(power=1, name="mae")
      >>> float(mse.compute(mse.update(preds, targets, jnp.ones(2))))  # (1 + 4) / 2
      2.5
      >>> float(mae.compute(mae.update(preds, targets, jnp.ones(2))))  # (1 + 2) / 2
      1.5
      >>> probs = jnp.array([[0.2, 0.8], [0.9, 0.1]])  # a binary classifier: p = 0.8, 0.1
      >>> round(float(mse.compute(mse.update(probs, jnp.array([1, 1]), jnp.ones(2)))), 4)
      0.425
    """

    power: int = 2
    name: str = "mse"

    def update(self, preds, labels, weights):
        if preds.ndim >= 2 and preds.shape[-1] > 1 and labels.shape == preds.shape[:-1]:
            # Class ids for class scores (a regression's targets have the outputs' size).
            labels = jax.nn.one_hot(labels, preds.shape[-1], dtype=preds.dtype)
        diff = preds - labels.reshape(preds.shape)
        err = jnp.square(diff) if self.power == 2 else jnp.abs(diff)
        per_row = err.reshape(err.shape[0], -1).mean(axis=-1)
        return {"total": jnp.sum(per_row * weights), "count": jnp.sum(weights)}

    compute = LogLoss.compute


def _prf(which, average, name):
    return PrecisionRecallF1(which=which, average=average, name=name)


def _table():
    table = {
        "accuracy": Accuracy(),
        "acc": Accuracy(name="acc"),  # Keras logs a metric under the name it was given
        "sparse_categorical_accuracy": Accuracy(name="sparse_categorical_accuracy"),
        "categorical_accuracy": Accuracy(name="categorical_accuracy"),
        "binary_accuracy": Accuracy(name="binary_accuracy"),
        "top_k_accuracy": TopKAccuracy(),
        "top_5_accuracy": TopKAccuracy(k=5, name="top_5_accuracy"),
        # Keras's names for the same (k=5 is their default too).
        "top_k_categorical_accuracy": TopKAccuracy(k=5, name="top_k_categorical_accuracy"),
        "sparse_top_k_categorical_accuracy": TopKAccuracy(
            k=5, name="sparse_top_k_categorical_accuracy"
        ),
        "auc": AUC(),
        "confusion_matrix": ConfusionMatrix(),
        "log_loss": LogLoss(),
        "mse": MeanError(2, "mse"),
        "mean_squared_error": MeanError(2, "mean_squared_error"),
        "mae": MeanError(1, "mae"),
        "mean_absolute_error": MeanError(1, "mean_absolute_error"),
    }
    for which in ("precision", "recall", "f1"):
        table[which] = _prf(which, "macro", which)
        for average in ("macro", "micro", "weighted", "binary"):
            table[f"{which}_{average}"] = _prf(which, average, f"{which}_{average}")
        table[f"{which}_per_class"] = _prf(which, None, f"{which}_per_class")
    return table


_TABLE = _table()


def names() -> list[str]:
    """The metric names `get` accepts.

    Returns:
      A sorted list of names.

    Example:
      >>> from jaxnets.metrics import names
      >>> [n for n in names() if n.startswith("f1")]
      ['f1', 'f1_binary', 'f1_macro', 'f1_micro', 'f1_per_class', 'f1_weighted']
    """
    return sorted(_TABLE)


def get(metric):
    """Returns a metric object from a name (Keras or sklearn spelling) or an object.

    Any object with ``name``, ``update(preds, labels, weights)`` and
    ``compute(acc)`` is a metric.

    Args:
      metric: a name from `names` (case-insensitive), or a metric object,
        returned as it is after checking its attributes (a metric class, such
        as ``AUC``, gives its default instance, as in Keras).

    Returns:
      The metric object.

    Raises:
      UnknownNameError: an unknown name.
      ConfigError: an object without ``name``, ``update`` or ``compute``.

    Example:
      >>> get("f1_weighted")
      PrecisionRecallF1(which='f1', average='weighted', pos_label=1, name='f1_weighted')
    """
    if isinstance(metric, str):
        return lookup(metric, _TABLE, kind="metric")
    if isinstance(metric, type):  # a class, as Keras accepts: its default instance
        metric = metric()
    for attr in ("name", "update", "compute"):
        if not hasattr(metric, attr):
            raise ConfigError(
                f"a metric needs a name, update() and compute(); {metric!r} has no {attr!r}. "
                f"Pass a name such as {', '.join(names()[:4])}, ..."
            )
    return metric


def _values(metric_objs, accs) -> dict:
    """Each metric's value from its merged sums: eagerly, or traced (vmapped over members)."""
    return {
        name: acc["total"] / jnp.maximum(acc["count"], 1e-12)
        if name == "loss"
        else metric_objs[name].compute(acc)
        for name, acc in accs.items()
    }


def _to_host(value) -> np.ndarray | float:
    value = np.asarray(value)
    return float(value) if value.ndim == 0 else value


def compute_all(metric_objs, accumulators) -> dict[str, np.ndarray | float]:
    """Computes every metric from merged accumulators on the host.

    Scalars come back as Python floats, per-class values as numpy arrays.

    Args:
      metric_objs: ``{name: metric}`` (objects from `get`), with a metric for
        every key of ``accumulators`` except ``"loss"``.
      accumulators: ``{name: sums}``: each metric's merged ``update`` sums,
        plus optionally ``"loss": {"total": ..., "count": ...}`` (the loss is
        ``total / count``); device or host arrays.

    Returns:
      ``{name: value}`` for every key of ``accumulators``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.metrics import compute_all, get
      >>> objs = {"accuracy": get("accuracy"), "recall_per_class": get("recall_per_class")}
      >>> preds = jnp.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])  # predicts 0, 1, 1, 1
      >>> labels = jnp.array([0, 0, 1, 1])
      >>> sums = {name: m.update(preds, labels, jnp.ones(4)) for name, m in objs.items()}
      >>> sums["loss"] = {"total": jnp.array(2.0), "count": jnp.array(4.0)}  # "loss": total / count
      >>> compute_all(objs, sums)
      {'accuracy': 0.75, 'loss': 0.5, 'recall_per_class': array([0.5, 1. ], dtype=float32)}
    """
    host = jax.device_get(accumulators)
    # The final division is tiny: run it on the host CPU so that it never queues
    # work (or transfers) on an accelerator.
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
        values = _values(metric_objs, jax.tree.map(jnp.asarray, host))
        return {name: _to_host(v) for name, v in values.items()}


# One vmapped program per metric table and accumulator layout.
_MEMBER_PROGRAMS = compile_lib.BoundedCache(limit=64)


def _member_program(metric_objs, names: tuple[str, ...]):
    key = tuple((name, metric_objs.get(name)) for name in names)
    try:
        program = _MEMBER_PROGRAMS.get(key)
    except TypeError:  # an unhashable user metric: build (and trace) afresh
        key, program = None, None
    if program is None:
        program = jax.jit(jax.vmap(lambda accs: _values(metric_objs, accs)), backend="cpu")
        if key is not None:
            _MEMBER_PROGRAMS.put(key, program)
    return program


def compute_members(metric_objs, accumulators) -> list[dict[str, np.ndarray | float]]:
    """`compute_all` for accumulators stacked on a leading member axis, as one program.

    A population of N members would otherwise pay N rounds of small host ops
    per epoch; this computes every member's metrics in one vmapped CPU call.

    Args:
      metric_objs: ``{name: metric}``, as in `compute_all`; the vmapped program
        is cached per metric table and accumulator keys.
      accumulators: ``{name: sums}`` as in `compute_all`, every array with a
        leading member axis ``(N, ...)``.

    Returns:
      A list of N dicts ``{name: value}``, one per member.

    Example:
      >>> import numpy as np
      >>> sums = {"loss": {"total": np.array([2.0, 9.0]), "count": np.array([4.0, 3.0])}}
      >>> [row["loss"] for row in compute_members({}, sums)]
      [0.5, 3.0]
    """
    host = jax.device_get(accumulators)
    names = tuple(sorted(host))
    values = jax.device_get(_member_program(metric_objs, names)(host))
    n = len(jax.tree.leaves(host)[0]) if host else 0
    return [{name: _to_host(values[name][i]) for name in names} for i in range(n)]
