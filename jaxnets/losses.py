"""Per-example losses, looked up by their Keras names.

Every loss maps ``(outputs, targets) -> (B,)``: one value per example, so the
training step can mask padded rows and weight samples before it reduces. As in
Keras, element-wise losses average the last axis only, so per-step outputs
``(B, T, K)`` give one value per step ``(B, T)``, and the training step leaves
the masked steps out (`jaxnets.training.step.per_example_loss`). A
`Loss` also knows how to turn model outputs into class probabilities and
targets into integer labels, which is what the metrics need.

The cross-entropies, the squared, absolute and Huber errors, `Loss` and the
registry (`get`, `names`) are here; Keras's other losses (`log_cosh`,
`kl_divergence`, `poisson`, the hinges, `cosine_similarity`,
`mean_absolute_percentage_error`, `mean_squared_logarithmic_error`) live in
`jaxnets.losses_keras`, and this module re-exports them.

Example:
  >>> import jax.numpy as jnp
  >>> from jaxnets import losses
  >>> loss = losses.get("sparse_categorical_crossentropy")
  >>> loss(jnp.array([[0.0, 0.0]]), jnp.array([1])).round(4)
  Array([0.6931], dtype=float32)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from jaxnets.errors import ConfigError, ShapeError, lookup
from jaxnets.losses_common import _EPS, _mean_last
from jaxnets.losses_keras import (
    categorical_hinge,
    cosine_similarity,
    hinge,
    kl_divergence,
    log_cosh,
    mean_absolute_percentage_error,
    mean_squared_logarithmic_error,
    poisson,
    squared_hinge,
)


def _log_probs(outputs, from_logits: bool):
    if from_logits:
        return jax.nn.log_softmax(outputs, axis=-1)
    # As Keras does: outputs that do not sum to 1 (a final sigmoid, say) are
    # rescaled to a distribution before the clip and the log.
    probs = outputs / jnp.sum(outputs, axis=-1, keepdims=True)
    return jnp.log(jnp.clip(probs, _EPS, 1.0 - _EPS))


def _smooth(one_hot, label_smoothing: float):
    num_classes = one_hot.shape[-1]
    return one_hot * (1.0 - label_smoothing) + label_smoothing / num_classes


def sparse_categorical_crossentropy(
    outputs, targets, *, from_logits: bool = True, label_smoothing: float = 0.0
):
    """Cross-entropy of `(B, C)` outputs against integer labels `(B,)`.

    Args:
      outputs: ``(B, C)`` logits, or probabilities when ``from_logits=False``
        (divided by their sum, then clipped to ``[1e-7, 1 - 1e-7]`` before the
        log, as in Keras).
      targets: integer class labels ``(B,)`` in ``[0, C)``.
      from_logits: whether ``outputs`` are logits (default) or probabilities.
      label_smoothing: in [0, 1): the labels become one-hot vectors smoothed to
        ``t * (1 - label_smoothing) + label_smoothing / C`` (0, the default, does not smooth).

    Returns:
      The per-example loss ``(B,)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.losses import sparse_categorical_crossentropy
      >>> logits = jnp.zeros((2, 2))  # uniform: -log(1/2) = log 2 whatever the label
      >>> sparse_categorical_crossentropy(logits, jnp.array([0, 1])).round(4).tolist()
      [0.6931, 0.6931]
      >>> probs = jnp.array([[0.5, 0.5], [0.9, 0.1]])  # -log 0.5, -log 0.9
      >>> loss = sparse_categorical_crossentropy(probs, jnp.array([0, 0]), from_logits=False)
      >>> loss.round(4).tolist()
      [0.6931, 0.1054]
    """
    if label_smoothing:
        one_hot = jax.nn.one_hot(targets, outputs.shape[-1], dtype=outputs.dtype)
        return categorical_crossentropy(
            outputs, one_hot, from_logits=from_logits, label_smoothing=label_smoothing
        )
    log_p = _log_probs(outputs, from_logits)
    return -jnp.take_along_axis(log_p, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]


def categorical_crossentropy(
    outputs, targets, *, from_logits: bool = True, label_smoothing: float = 0.0
):
    """Cross-entropy of `(B, C)` outputs against one-hot or soft targets `(B, C)`.

    Args:
      outputs: ``(B, C)`` logits, or probabilities when ``from_logits=False``
        (divided by their sum, then clipped to ``[1e-7, 1 - 1e-7]`` before the
        log, as in Keras).
      targets: one-hot or soft targets ``(B, C)``, cast to the dtype of ``outputs``.
      from_logits: whether ``outputs`` are logits (default) or probabilities.
      label_smoothing: in [0, 1): targets become
        ``t * (1 - label_smoothing) + label_smoothing / C`` (0, the default, does not smooth).

    Returns:
      The per-example loss ``(B,)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.losses import categorical_crossentropy
      >>> probs = jnp.array([[0.5, 0.5], [0.2, 0.8]])
      >>> one_hot = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> loss = categorical_crossentropy(probs, one_hot, from_logits=False)
      >>> loss.round(4).tolist()  # -log 0.5, -log 0.8
      [0.6931, 0.2231]
    """
    targets = targets.astype(outputs.dtype)
    if label_smoothing:
        targets = _smooth(targets, label_smoothing)
    return -jnp.sum(targets * _log_probs(outputs, from_logits), axis=-1)


def binary_crossentropy(
    outputs, targets, *, from_logits: bool = True, label_smoothing: float = 0.0
):
    """Binary cross-entropy, averaged over the last axis (as Keras does).

    Args:
      outputs: ``(B,)`` or ``(B, K)`` logits, or probabilities when
        ``from_logits=False`` (clipped to ``[1e-7, 1 - 1e-7]``, as in Keras).
      targets: 0/1 (or soft) targets with as many elements as ``outputs``,
        reshaped to its shape and cast to its dtype.
      from_logits: whether ``outputs`` are logits (default) or probabilities.
      label_smoothing: in [0, 1): targets become
        ``t * (1 - label_smoothing) + 0.5 * label_smoothing`` (0, the default, does not smooth).

    Returns:
      The per-example loss ``(B,)`` for outputs ``(B,)`` or ``(B, K)``; one
      value per step ``(B, T)`` for ``(B, T, K)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.losses import binary_crossentropy
      >>> probs, targets = jnp.array([0.5, 0.9]), jnp.array([1, 0])  # -log 0.5, -log 0.1
      >>> binary_crossentropy(probs, targets, from_logits=False).round(4).tolist()
      [0.6931, 2.3026]
      >>> logits = jnp.zeros((2, 3))  # (B, K): log 2 for each of K, then the mean
      >>> binary_crossentropy(logits, jnp.ones((2, 3))).round(4).tolist()
      [0.6931, 0.6931]
    """
    targets = targets.astype(outputs.dtype).reshape(outputs.shape)
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        per = optax.sigmoid_binary_cross_entropy(outputs, targets)
    else:
        p = jnp.clip(outputs, _EPS, 1.0 - _EPS)
        per = -(targets * jnp.log(p) + (1.0 - targets) * jnp.log(1.0 - p))
    return _mean_last(per)


def mean_squared_error(outputs, targets):
    """Squared error averaged over the last axis (as Keras does).

    Args:
      outputs: predictions ``(B,)`` or ``(B, ...)``.
      targets: targets with as many elements as ``outputs`` (reshaped to its shape).

    Returns:
      The mean of ``(outputs - targets) ** 2`` over the last axis: shape
      ``(B,)`` for outputs ``(B,)`` or ``(B, K)``, ``(B, T)`` for ``(B, T, K)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.losses import mean_squared_error
      >>> outputs = jnp.array([[1.0, 2.0], [0.0, 0.0]])
      >>> mean_squared_error(outputs, jnp.array([[1.0, 4.0], [3.0, 1.0]])).tolist()
      [2.0, 5.0]
    """
    return _mean_last(jnp.square(outputs - targets.reshape(outputs.shape)))


def mean_absolute_error(outputs, targets):
    """Absolute error averaged over the last axis (as Keras does).

    Args:
      outputs: predictions ``(B,)`` or ``(B, ...)``.
      targets: targets with as many elements as ``outputs`` (reshaped to its shape).

    Returns:
      The mean of ``|outputs - targets|`` over the last axis: shape ``(B,)``
      for outputs ``(B,)`` or ``(B, K)``, ``(B, T)`` for ``(B, T, K)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.losses import mean_absolute_error
      >>> outputs = jnp.array([[1.0, 2.0], [0.0, 0.0]])
      >>> mean_absolute_error(outputs, jnp.array([[1.0, 4.0], [3.0, 1.0]])).tolist()
      [1.0, 2.0]
    """
    return _mean_last(jnp.abs(outputs - targets.reshape(outputs.shape)))


def huber(outputs, targets, *, delta: float = 1.0):
    """Huber loss (quadratic within `delta`, linear outside), as Keras defines it.

    Args:
      outputs: predictions ``(B,)`` or ``(B, ...)``.
      targets: targets with as many elements as ``outputs`` (reshaped to its shape).
      delta: the error size (in the units of the targets) where the loss turns
        from ``0.5 * e**2`` to ``delta * (|e| - 0.5 * delta)``.

    Returns:
      The loss averaged over the last axis: shape ``(B,)`` for outputs
      ``(B,)`` or ``(B, K)``, ``(B, T)`` for ``(B, T, K)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.losses import huber
      >>> huber(jnp.array([0.5, 3.0]), jnp.zeros(2)).tolist()  # 0.5 * 0.5**2, 3 - 0.5
      [0.125, 2.5]
      >>> huber(jnp.array([0.5, 3.0]), jnp.zeros(2), delta=2.0).tolist()  # 2 * (3 - 1)
      [0.125, 4.0]
    """
    return _mean_last(optax.huber_loss(outputs, targets.reshape(outputs.shape), delta=delta))


@dataclasses.dataclass(frozen=True)
class Loss:
    """A per-example loss plus what the metrics need to know about it.

    Attributes:
      fn: ``(outputs, targets, **kwargs) -> (B,)``.
      kind: ``"categorical"``, ``"sparse"``, ``"binary"`` or ``"regression"``.
      from_logits: whether model outputs are logits (True) or probabilities.
      kwargs: extra keyword arguments for ``fn`` as a tuple of pairs (hashable).
      name: the loss's name, e.g. the one given to `get`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.losses import Loss, mean_absolute_error
      >>> mae = Loss(mean_absolute_error, kind="regression", name="mae")
      >>> mae(jnp.array([1.0, 2.0]), jnp.array([1.0, 4.0])).tolist()
      [0.0, 2.0]
      >>> from jaxnets import losses
      >>> bce = losses.get("binary_crossentropy")  # one logit per example
      >>> bce.predictions(jnp.array([[0.0]])).tolist(), bce.labels(jnp.array([0.7])).tolist()
      ([[0.5, 0.5]], [1])
    """

    fn: Callable
    kind: str = "sparse"
    from_logits: bool = True
    kwargs: tuple = ()
    name: str = "loss"

    def __call__(self, outputs, targets):
        kw = dict(self.kwargs)
        if self.fn in _TAKES_FROM_LOGITS:
            kw["from_logits"] = self.from_logits
        return self.fn(outputs, targets, **kw)

    def predictions(self, outputs):
        """Class probabilities for classifiers; raw outputs for regression.

        `(B, C)` for one label per example. A binary classifier with `K`
        sigmoid outputs `(B, K)` (multi-label) gives `(B, K, 2)`: the metrics
        then count every label of every example, as Keras's ``binary_accuracy``
        and ``Precision`` do.
        """
        if self.kind == "regression":
            return outputs
        if self.kind == "binary":
            p = jax.nn.sigmoid(outputs) if self.from_logits else outputs
            if p.ndim > 2 and p.size != p.shape[0]:  # static shapes: checked once, while tracing
                raise ShapeError(
                    "metrics of a binary classifier read one probability per example (B,) or "
                    f"(B, 1), or one per label (B, K), got outputs of shape {tuple(outputs.shape)};"
                    " for per-step outputs train with metrics=[] (the loss leaves masked steps "
                    "out) and compute the metrics from predict()."
                )
            p = _per_label(p)
            return jnp.stack([1.0 - p, p], axis=-1)
        return jax.nn.softmax(outputs, axis=-1) if self.from_logits else outputs

    def labels(self, targets):
        """Integer labels for classifiers (`(B,)`, or `(B, K)` multi-label); raw targets for regression."""
        if self.kind == "categorical":
            return jnp.argmax(targets, axis=-1)
        if self.kind == "binary":
            return (_per_label(targets) > 0.5).astype(jnp.int32)
        if self.kind == "sparse":
            return targets.astype(jnp.int32)
        return targets


def _per_label(a):
    """`(B,)` or `(B, 1)` -> `(B,)`; `(B, K)` -> `(B, K)`: one value per label of a binary task."""
    a = a.reshape(a.shape[0], -1)
    return a[:, 0] if a.shape[1] == 1 else a


_TABLE = {
    "sparse_categorical_crossentropy": (sparse_categorical_crossentropy, "sparse"),
    "categorical_crossentropy": (categorical_crossentropy, "categorical"),
    "binary_crossentropy": (binary_crossentropy, "binary"),
    "mean_squared_error": (mean_squared_error, "regression"),
    "mse": (mean_squared_error, "regression"),
    "mean_absolute_error": (mean_absolute_error, "regression"),
    "mae": (mean_absolute_error, "regression"),
    "huber": (huber, "regression"),
    "log_cosh": (log_cosh, "regression"),
    "kl_divergence": (kl_divergence, "regression"),
    "kld": (kl_divergence, "regression"),
    "poisson": (poisson, "regression"),
    "hinge": (hinge, "regression"),
    "squared_hinge": (squared_hinge, "regression"),
    "categorical_hinge": (categorical_hinge, "regression"),
    "cosine_similarity": (cosine_similarity, "regression"),
    "mean_absolute_percentage_error": (mean_absolute_percentage_error, "regression"),
    "mape": (mean_absolute_percentage_error, "regression"),
    "mean_squared_logarithmic_error": (mean_squared_logarithmic_error, "regression"),
    "msle": (mean_squared_logarithmic_error, "regression"),
}


_TAKES_FROM_LOGITS = (
    sparse_categorical_crossentropy,
    categorical_crossentropy,
    binary_crossentropy,
)


def names() -> list[str]:
    """The loss names `get` accepts.

    Returns:
      A sorted list of names.

    Example:
      >>> from jaxnets import losses
      >>> [n for n in losses.names() if "crossentropy" in n]
      ['binary_crossentropy', 'categorical_crossentropy', 'sparse_categorical_crossentropy']
      >>> len(losses.names())  # with Keras's short names: mse, mae, kld, mape, msle
      20
    """
    return sorted(_TABLE)


def get(
    loss: str | Callable | Loss,
    *,
    from_logits: bool = True,
    label_smoothing: float = 0.0,
    **kwargs,
) -> Loss:
    """Returns a `Loss` from a Keras name, a `Loss`, or a callable.

    Args:
      loss: a name such as ``"sparse_categorical_crossentropy"`` or ``"mse"``, a
        `Loss`, or a callable ``(outputs, targets) -> (B,)`` (treated as regression
        for metrics unless wrapped in a `Loss` with another ``kind``).
      from_logits: whether the model outputs logits (the default) or probabilities.
      label_smoothing: for cross-entropies, the smoothing factor in [0, 1).
      **kwargs: extra arguments for the loss, e.g. ``delta`` for Huber.

    Returns:
      A `Loss`: ``loss`` itself when it is one, else one wrapping the function
      (``from_logits``, ``label_smoothing`` and ``kwargs`` apply to names only).

    Raises:
      UnknownNameError: an unknown loss name.
      ConfigError: ``label_smoothing`` outside [0, 1), or given for a regression loss.

    Example:
      >>> get("mse").kind
      'regression'
    """
    if isinstance(loss, Loss):
        return loss
    if callable(loss):
        return Loss(
            fn=loss, kind="regression", from_logits=True, name=getattr(loss, "__name__", "loss")
        )
    fn, kind = lookup(loss, _TABLE, kind="loss")
    if not 0.0 <= label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
    if label_smoothing:
        if kind == "regression":
            raise ConfigError(f"label_smoothing applies to cross-entropies, not {loss!r}.")
        kwargs["label_smoothing"] = label_smoothing
    return Loss(
        fn=fn,
        kind=kind,
        from_logits=from_logits,
        kwargs=tuple(sorted(kwargs.items())),
        name=loss.lower(),
    )
