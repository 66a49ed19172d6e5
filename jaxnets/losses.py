"""Per-example losses, looked up by their Keras names.

Every loss maps ``(outputs, targets) -> (B,)``: one value per example, so the
training step can mask padded rows and weight samples before it reduces. A
`Loss` also knows how to turn model outputs into class probabilities and
targets into integer labels, which is what the metrics need.

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

# Probabilities are clipped this far from 0 and 1 before a log, as Keras does.
_EPS = 1e-7


def _log_probs(outputs, from_logits: bool):
    if from_logits:
        return jax.nn.log_softmax(outputs, axis=-1)
    return jnp.log(jnp.clip(outputs, _EPS, 1.0))


def _smooth(one_hot, label_smoothing: float):
    num_classes = one_hot.shape[-1]
    return one_hot * (1.0 - label_smoothing) + label_smoothing / num_classes


def sparse_categorical_crossentropy(
    outputs, targets, *, from_logits: bool = True, label_smoothing: float = 0.0
):
    """Cross-entropy of `(B, C)` outputs against integer labels `(B,)`.

    Args:
      outputs: ``(B, C)`` logits, or probabilities when ``from_logits=False``
        (clipped to ``[1e-7, 1]`` before the log, as in Keras).
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
        (clipped to ``[1e-7, 1]`` before the log, as in Keras).
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
    """Binary cross-entropy, averaged over any trailing axes (`(B,)` or `(B, K)`).

    Args:
      outputs: ``(B,)`` or ``(B, K)`` logits, or probabilities when
        ``from_logits=False`` (clipped to ``[1e-7, 1 - 1e-7]``, as in Keras).
      targets: 0/1 (or soft) targets with as many elements as ``outputs``,
        reshaped to its shape and cast to its dtype.
      from_logits: whether ``outputs`` are logits (default) or probabilities.
      label_smoothing: in [0, 1): targets become
        ``t * (1 - label_smoothing) + 0.5 * label_smoothing`` (0, the default, does not smooth).

    Returns:
      The per-example loss ``(B,)``.

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
    return _mean_trailing(per)


def _mean_trailing(per):
    return per.reshape(per.shape[0], -1).mean(axis=-1) if per.ndim > 1 else per


def mean_squared_error(outputs, targets):
    """Squared error averaged over trailing axes.

    Args:
      outputs: predictions ``(B,)`` or ``(B, ...)``.
      targets: targets with as many elements as ``outputs`` (reshaped to its shape).

    Returns:
      The per-example mean of ``(outputs - targets) ** 2``, shape ``(B,)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.losses import mean_squared_error
      >>> outputs = jnp.array([[1.0, 2.0], [0.0, 0.0]])
      >>> mean_squared_error(outputs, jnp.array([[1.0, 4.0], [3.0, 1.0]])).tolist()
      [2.0, 5.0]
    """
    return _mean_trailing(jnp.square(outputs - targets.reshape(outputs.shape)))


def mean_absolute_error(outputs, targets):
    """Absolute error averaged over trailing axes.

    Args:
      outputs: predictions ``(B,)`` or ``(B, ...)``.
      targets: targets with as many elements as ``outputs`` (reshaped to its shape).

    Returns:
      The per-example mean of ``|outputs - targets|``, shape ``(B,)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.losses import mean_absolute_error
      >>> outputs = jnp.array([[1.0, 2.0], [0.0, 0.0]])
      >>> mean_absolute_error(outputs, jnp.array([[1.0, 4.0], [3.0, 1.0]])).tolist()
      [1.0, 2.0]
    """
    return _mean_trailing(jnp.abs(outputs - targets.reshape(outputs.shape)))


def huber(outputs, targets, *, delta: float = 1.0):
    """Huber loss (quadratic within `delta`, linear outside), as Keras defines it.

    Args:
      outputs: predictions ``(B,)`` or ``(B, ...)``.
      targets: targets with as many elements as ``outputs`` (reshaped to its shape).
      delta: the error size (in the units of the targets) where the loss turns
        from ``0.5 * e**2`` to ``delta * (|e| - 0.5 * delta)``.

    Returns:
      The per-example loss averaged over trailing axes, shape ``(B,)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.losses import huber
      >>> huber(jnp.array([0.5, 3.0]), jnp.zeros(2)).tolist()  # 0.5 * 0.5**2, 3 - 0.5
      [0.125, 2.5]
      >>> huber(jnp.array([0.5, 3.0]), jnp.zeros(2), delta=2.0).tolist()  # 2 * (3 - 1)
      [0.125, 4.0]
    """
    return _mean_trailing(optax.huber_loss(outputs, targets.reshape(outputs.shape), delta=delta))


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
        """Class probabilities `(B, C)` for classifiers; raw outputs for regression."""
        if self.kind == "regression":
            return outputs
        if self.kind == "binary":
            p = jax.nn.sigmoid(outputs) if self.from_logits else outputs
            if p.size != p.shape[0]:  # shapes are static: this runs once, while tracing
                raise ShapeError(
                    "metrics of a binary classifier read one probability per example, "
                    f"got outputs of shape {tuple(outputs.shape)}; for several labels per "
                    "example (multi-label), train with metrics=[] and compute them per label."
                )
            p = p.reshape(p.shape[0])
            return jnp.stack([1.0 - p, p], axis=-1)
        return jax.nn.softmax(outputs, axis=-1) if self.from_logits else outputs

    def labels(self, targets):
        """Integer labels `(B,)` for classifiers; raw targets for regression."""
        if self.kind == "categorical":
            return jnp.argmax(targets, axis=-1)
        if self.kind == "binary":
            return (targets.reshape(targets.shape[0]) > 0.5).astype(jnp.int32)
        if self.kind == "sparse":
            return targets.astype(jnp.int32)
        return targets


_TABLE = {
    "sparse_categorical_crossentropy": (sparse_categorical_crossentropy, "sparse"),
    "categorical_crossentropy": (categorical_crossentropy, "categorical"),
    "binary_crossentropy": (binary_crossentropy, "binary"),
    "mean_squared_error": (mean_squared_error, "regression"),
    "mse": (mean_squared_error, "regression"),
    "mean_absolute_error": (mean_absolute_error, "regression"),
    "mae": (mean_absolute_error, "regression"),
    "huber": (huber, "regression"),
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
      >>> losses.names()
      ['binary_crossentropy', 'categorical_crossentropy', 'huber', 'mae',
       'mean_absolute_error', 'mean_squared_error', 'mse', 'sparse_categorical_crossentropy']
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
