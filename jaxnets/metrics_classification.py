"""Classification metrics counted in a confusion matrix or at thresholds.

`ConfusionMatrix` sums weighted (true class, predicted class) counts;
`PrecisionRecallF1` (and its Keras-named forms `Precision` and `Recall`)
averages precision, recall or F1 from that matrix as scikit-learn does; `AUC`
integrates the ROC curve from counts at fixed thresholds, as Keras does. Like
every metric, each ``update`` returns sums that add up over batches.
`jaxnets.metrics` re-exports these names and gives them by name (`get`).

Example:
  >>> import jax.numpy as jnp
  >>> preds = jnp.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])  # predicts 0, 1, 1, 0
  >>> labels = jnp.array([0, 1, 1, 1])
  >>> sums = ConfusionMatrix().update(preds, labels, jnp.ones(4))
  >>> round(float(Recall().compute(sums)), 4)  # class 1: 2 of 3 found
  0.6667
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.errors import ConfigError
from jaxnets.metrics_rows import _label_rows


@dataclasses.dataclass(frozen=True)
class ConfusionMatrix:
    """A `(C, C)` matrix of weighted counts, rows true class, columns predicted.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.metrics import ConfusionMatrix
      >>> preds = jnp.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])  # predicts 0, 1, 1, 0
      >>> labels = jnp.array([0, 1, 1, 1])
      >>> cm = ConfusionMatrix()
      >>> cm.compute(cm.update(preds, labels, jnp.ones(4))).tolist()
      [[1.0, 0.0], [1.0, 2.0]]
    """

    name: str = "confusion_matrix"

    def update(self, preds, labels, weights):
        preds, labels, weights = _label_rows(preds, labels, weights)
        num_classes = preds.shape[-1]
        true = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * weights[:, None]
        pred = jax.nn.one_hot(jnp.argmax(preds, axis=-1), num_classes, dtype=jnp.float32)
        return {"matrix": true.T @ pred}

    def compute(self, acc):
        return acc["matrix"]


_AVERAGES = ("macro", "micro", "weighted", "binary", None)


def _safe_div(num, den):
    # sklearn's zero_division default gives 0.0 (with a warning) where den == 0.
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


@dataclasses.dataclass(frozen=True)
class PrecisionRecallF1:
    """Precision, recall or F1 from a confusion matrix, averaged as sklearn does.

    Attributes:
      which: ``"precision"``, ``"recall"`` or ``"f1"``.
      average: ``"macro"``, ``"micro"``, ``"weighted"``, ``"binary"`` (class
        ``pos_label``) or ``None`` for one value per class.
      pos_label: the class index whose value ``average="binary"`` returns
        (default 1); ignored by the other averages.
      name: the key in logs; by default the name `get` gives the same metric
        (``"f1"``, ``"recall_binary"``, ``"precision_per_class"``).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.metrics import PrecisionRecallF1
      >>> preds = jnp.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])  # predicts 0, 1, 1, 0
      >>> labels = jnp.array([0, 1, 1, 1])  # class 1: tp = 2, fp = 0, fn = 1
      >>> sums = PrecisionRecallF1().update(preds, labels, jnp.ones(4))  # a confusion matrix
      >>> for which in ("precision", "recall", "f1"):
      ...     print(which, round(float(PrecisionRecallF1(which, "binary").compute(sums)), 4))
      precision 1.0
      recall 0.6667
      f1 0.8
      >>> round(float(PrecisionRecallF1("f1", "macro").compute(sums)), 4)  # (2/3 + 4/5) / 2
      0.7333
    """

    which: str = "f1"
    average: str | None = "macro"
    pos_label: int = 1
    name: str | None = None  # default: the `get` name, e.g. "recall" or "recall_binary"

    def __post_init__(self):
        # An unknown average would otherwise fall through to the macro average.
        if self.which not in ("precision", "recall", "f1"):
            raise ConfigError(f"which must be 'precision', 'recall' or 'f1', got {self.which!r}.")
        if self.average not in _AVERAGES:
            raise ConfigError(
                f"average must be one of {', '.join(map(repr, _AVERAGES))}, got {self.average!r}."
            )
        if self.name is None:
            suffix = {"macro": "", None: "_per_class"}.get(self.average, f"_{self.average}")
            object.__setattr__(self, "name", f"{self.which}{suffix}")

    def update(self, preds, labels, weights):
        if self.average == "binary":  # static shapes: checked once, while tracing
            self._check_pos_label(preds.shape[-1])
        return ConfusionMatrix().update(preds, labels, weights)

    def _check_pos_label(self, num_classes: int):
        if not 0 <= self.pos_label < num_classes:  # jnp indexing would clamp it
            raise ConfigError(
                f"pos_label {self.pos_label} is not a class of this {num_classes}-class "
                f"model; use a class index in [0, {num_classes})."
            )

    def compute(self, acc):
        m = acc["matrix"]
        tp = jnp.diag(m)
        support = m.sum(axis=1)  # true count per class
        predicted = m.sum(axis=0)
        if self.average == "micro":
            tp, support, predicted = tp.sum(), support.sum(), predicted.sum()
        precision = _safe_div(tp, predicted)
        recall = _safe_div(tp, support)
        f1 = _safe_div(2 * tp, predicted + support)
        value = {"precision": precision, "recall": recall, "f1": f1}[self.which]
        if self.average in ("micro", None):
            return value
        if self.average == "binary":
            self._check_pos_label(m.shape[0])
            return value[self.pos_label]
        if self.average == "weighted":
            return _safe_div(jnp.sum(value * support), support.sum())
        # sklearn's macro averages over classes present in labels or predictions.
        present = (support + predicted) > 0
        return jnp.sum(jnp.where(present, value, 0.0)) / jnp.maximum(present.sum(), 1)


@dataclasses.dataclass(frozen=True)
class AUC:
    """Area under the ROC curve from weighted counts at fixed thresholds (Keras's ``AUC``).

    A score counts as positive when it is above a threshold, at
    ``num_thresholds`` thresholds spread evenly over [0, 1] (plus one just
    below 0 and one just above 1); the curve through the (false positive
    rate, true positive rate) points is integrated with the trapezoidal rule,
    as Keras's default ``AUC()`` does. The counts add up over batches, so the
    value is the whole dataset's, within about ``1 / num_thresholds`` of
    scikit-learn's exact ``roc_auc_score``. Scores `(N, 2)` use the positive
    class (column 1); with more classes every (row, class) pair counts once,
    one-vs-rest, as Keras's ``AUC`` on one-hot targets does.

    Attributes:
      num_thresholds: how many thresholds (at least 2; Keras's default 200).
      name: the key in logs.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.metrics import AUC
      >>> p1 = jnp.array([0.1, 0.4, 0.35, 0.8])  # sklearn's roc_auc_score example: 0.75
      >>> preds, labels = jnp.stack([1 - p1, p1], axis=-1), jnp.array([0, 0, 1, 1])
      >>> auc = AUC()
      >>> round(float(auc.compute(auc.update(preds, labels, jnp.ones(4)))), 4)
      0.75
    """

    num_thresholds: int = 200
    name: str = "auc"

    def __post_init__(self):
        if not isinstance(self.num_thresholds, int) or self.num_thresholds < 2:
            raise ConfigError(
                f"num_thresholds must be an integer >= 2, got {self.num_thresholds!r}."
            )

    def thresholds(self) -> np.ndarray:
        """The thresholds, in Keras's order and float32 values (ascending)."""
        n, eps = self.num_thresholds, 1e-7  # eps: Keras's backend.epsilon()
        inner = [(i + 1) * 1.0 / (n - 1) for i in range(n - 2)]
        return np.array([0.0 - eps, *inner, 1.0 + eps]).astype(np.float32)

    def update(self, preds, labels, weights):
        preds, labels, weights = _label_rows(preds, labels, weights)
        num_classes = preds.shape[-1]
        if num_classes == 2:
            scores, positive = preds[:, 1], (labels == 1).astype(jnp.float32)
        else:  # one-vs-rest over every (row, class) pair
            scores = preds.reshape(-1)
            positive = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32).reshape(-1)
            weights = jnp.repeat(weights, num_classes)
        pos, neg = positive * weights, (1.0 - positive) * weights
        # How many thresholds each score is above: a histogram over those counts, summed
        # from the top, gives every threshold's counts in O(N) memory (not N x thresholds).
        n = self.num_thresholds
        above = jnp.searchsorted(jnp.asarray(self.thresholds()), scores, side="left")

        def counts_above(w):
            hist = jax.ops.segment_sum(w, above, num_segments=n + 1)
            return jnp.cumsum(hist[::-1])[::-1][1:]  # [j]: weight of scores above threshold j

        return {
            "tp": counts_above(pos),
            "fp": counts_above(neg),
            "pos": jnp.sum(pos),
            "neg": jnp.sum(neg),
        }

    def compute(self, acc):
        tpr = _safe_div(acc["tp"], acc["pos"])
        fpr = _safe_div(acc["fp"], acc["neg"])
        return jnp.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2.0)


@dataclasses.dataclass(frozen=True)
class Precision(PrecisionRecallF1):
    """Keras's ``Precision()``: the positive class's precision (``average="binary"``).

    For a binary classifier (one sigmoid output), or a multi-label one where
    every label counts; a port of ``keras.metrics.Precision()``.

    Attributes:
      which: ``"precision"``.
      average: ``"binary"``: the value of class ``pos_label``.
      pos_label: the positive class (default 1).
      name: the key in logs (default ``"precision"``).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.metrics import Precision
      >>> preds = jnp.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])  # predicts 0, 1, 1, 0
      >>> m = Precision()
      >>> m.name, float(m.compute(m.update(preds, jnp.array([0, 1, 0, 1]), jnp.ones(4))))
      ('precision', 0.5)
    """

    which: str = "precision"
    average: str | None = "binary"
    name: str | None = "precision"


@dataclasses.dataclass(frozen=True)
class Recall(PrecisionRecallF1):
    """Keras's ``Recall()``: the positive class's recall (``average="binary"``).

    For a binary classifier (one sigmoid output), or a multi-label one where
    every label counts; a port of ``keras.metrics.Recall()``.

    Attributes:
      which: ``"recall"``.
      average: ``"binary"``: the value of class ``pos_label``.
      pos_label: the positive class (default 1).
      name: the key in logs (default ``"recall"``).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.metrics import Recall
      >>> preds = jnp.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])  # predicts 0, 1, 1, 0
      >>> m = Recall()
      >>> m.name, float(m.compute(m.update(preds, jnp.array([0, 1, 0, 1]), jnp.ones(4))))
      ('recall', 0.5)
    """

    which: str = "recall"
    average: str | None = "binary"
    name: str | None = "recall"
