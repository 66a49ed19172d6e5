"""The other Keras losses: log-cosh, KL divergence, Poisson, hinges, cosine, MAPE, MSLE.

Each maps ``(outputs, targets) -> (B,)`` (per step ``(B, T)`` for sequences)
with Keras's formula, clip epsilon and last-axis mean. `jaxnets.losses`
re-exports them and gives them by their Keras names (`jaxnets.losses.get`).

Example:
  >>> import jax.numpy as jnp
  >>> poisson(jnp.array([[1.0, 2.0]]), jnp.array([[0.0, 2.0]])).round(4).tolist()
  [0.8069]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxnets.losses_common import _EPS, _mean_last


def _same_shape(outputs, targets):
    return targets.astype(outputs.dtype).reshape(outputs.shape)


def log_cosh(outputs, targets):
    """``log(cosh(error))`` averaged over the last axis (Keras's ``log_cosh``).

    Like the squared error for small errors, like ``|error| - log 2`` for large
    ones; computed as ``x + softplus(-2x) - log 2``, which does not overflow.

    Args:
      outputs: predictions ``(B,)`` or ``(B, ...)``.
      targets: targets with as many elements as ``outputs``.

    Returns:
      The loss averaged over the last axis, as `mean_squared_error`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.losses import log_cosh
      >>> log_cosh(jnp.array([[0.0, 1.0], [100.0, 0.0]]), jnp.zeros((2, 2))).round(4).tolist()
      [0.2169, 49.6534]
    """
    x = outputs - _same_shape(outputs, targets)
    return _mean_last(x + jax.nn.softplus(-2.0 * x) - jnp.log(2.0).astype(x.dtype))


def kl_divergence(outputs, targets):
    """``sum(t * log(t / p))`` over the last axis, both clipped to ``[1e-7, 1]`` (Keras's ``kld``).

    Args:
      outputs: predicted probabilities ``(B, C)`` (e.g. after a softmax).
      targets: target distributions of the same size.

    Returns:
      The divergence per example ``(B,)`` (per step ``(B, T)`` for ``(B, T, C)``).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.losses import kl_divergence
      >>> kl_divergence(jnp.array([[0.5, 0.5]]), jnp.array([[1.0, 0.0]])).round(4).tolist()
      [0.6931]
    """
    t = jnp.clip(_same_shape(outputs, targets), _EPS, 1.0)
    p = jnp.clip(outputs, _EPS, 1.0)
    return jnp.sum(t * jnp.log(t / p), axis=-1)


def poisson(outputs, targets):
    """``p - t * log(p + 1e-7)`` averaged over the last axis (Keras's ``poisson``).

    Args:
      outputs: predicted rates ``(B,)`` or ``(B, ...)``, positive.
      targets: observed counts with as many elements as ``outputs``.

    Returns:
      The loss averaged over the last axis, as `mean_squared_error`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.losses import poisson
      >>> poisson(jnp.array([[1.0, 2.0]]), jnp.array([[0.0, 2.0]])).round(4).tolist()
      [0.8069]
    """
    t = _same_shape(outputs, targets)
    return _mean_last(outputs - t * jnp.log(outputs + _EPS))


def _hinge_targets(targets):
    # As Keras: 0/1 targets become -1/1 when every target of the batch is 0 or 1.
    binary = jnp.all((targets == 0) | (targets == 1))
    return jnp.where(binary, 2.0 * targets - 1.0, targets)


def hinge(outputs, targets):
    """``max(1 - t * y, 0)`` averaged over the last axis, targets in {-1, 1} (Keras's ``hinge``).

    Args:
      outputs: scores ``(B,)`` or ``(B, ...)``.
      targets: -1/1 targets with as many elements as ``outputs``; 0/1 targets
        are turned into -1/1 when every target of the batch is 0 or 1, as in Keras.

    Returns:
      The loss averaged over the last axis, as `mean_squared_error`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.losses import hinge
      >>> hinge(jnp.array([0.3, -2.0, 0.5]), jnp.array([1, 1, 0])).round(4).tolist()
      [0.7, 3.0, 1.5]
    """
    t = _hinge_targets(_same_shape(outputs, targets))
    return _mean_last(jnp.maximum(1.0 - t * outputs, 0.0))


def squared_hinge(outputs, targets):
    """``max(1 - t * y, 0) ** 2`` averaged over the last axis (Keras's ``squared_hinge``).

    Args:
      outputs: scores ``(B,)`` or ``(B, ...)``.
      targets: -1/1 (or 0/1, as for `hinge`) targets with as many elements as ``outputs``.

    Returns:
      The loss averaged over the last axis, as `mean_squared_error`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.losses import squared_hinge
      >>> squared_hinge(jnp.array([0.5, -2.0]), jnp.array([1, -1])).round(4).tolist()
      [0.25, 0.0]
    """
    t = _hinge_targets(_same_shape(outputs, targets))
    return _mean_last(jnp.square(jnp.maximum(1.0 - t * outputs, 0.0)))


def categorical_hinge(outputs, targets):
    """``max(max_wrong - right + 1, 0)`` with one-hot targets (Keras's ``categorical_hinge``).

    Args:
      outputs: class scores ``(B, C)``.
      targets: one-hot targets of the same size.

    Returns:
      The loss per example ``(B,)`` (per step ``(B, T)`` for ``(B, T, C)``).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.losses import categorical_hinge
      >>> scores = jnp.array([[2.0, 0.5, 1.5], [0.0, 1.0, 0.0]])
      >>> categorical_hinge(scores, jnp.array([[1, 0, 0], [1, 0, 0]])).tolist()
      [0.5, 2.0]
    """
    t = _same_shape(outputs, targets)
    pos = jnp.sum(t * outputs, axis=-1)
    neg = jnp.max((1.0 - t) * outputs, axis=-1)
    return jnp.maximum(neg - pos + 1.0, 0.0)


def _l2_normalize(x):
    # Keras's normalize: x * min(1 / ||x||, 1 / eps), so a zero vector stays zero.
    inv_norm = jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
    return x * jnp.minimum(inv_norm, 1.0 / _EPS)


def cosine_similarity(outputs, targets):
    """Minus the cosine of the angle between outputs and targets, over the last axis.

    Keras's ``cosine_similarity`` loss: -1 when they point the same way, 0 when
    orthogonal or when either is a zero vector.

    Args:
      outputs: vectors ``(B, D)``.
      targets: vectors with as many elements as ``outputs``.

    Returns:
      The loss per example ``(B,)`` (per step ``(B, T)`` for ``(B, T, D)``).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.losses import cosine_similarity
      >>> out = jnp.array([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
      >>> cosine_similarity(out, jnp.array([[2.0, 2.0], [0.0, 1.0], [1.0, 0.0]])).round(4).tolist()
      [-1.0, -0.0, -0.0]
    """
    t = _same_shape(outputs, targets)
    return -jnp.sum(_l2_normalize(t) * _l2_normalize(outputs), axis=-1)


def mean_absolute_percentage_error(outputs, targets):
    """``100 * |t - y| / max(|t|, 1e-7)`` averaged over the last axis (Keras's ``mape``).

    Args:
      outputs: predictions ``(B,)`` or ``(B, ...)``.
      targets: targets with as many elements as ``outputs``.

    Returns:
      The loss averaged over the last axis, as `mean_squared_error`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.losses import mean_absolute_percentage_error
      >>> mean_absolute_percentage_error(jnp.array([[110.0, 45.0]]), jnp.array([[100.0, 50.0]])).tolist()
      [10.0]
    """
    t = _same_shape(outputs, targets)
    return 100.0 * _mean_last(jnp.abs((t - outputs) / jnp.maximum(jnp.abs(t), _EPS)))


def mean_squared_logarithmic_error(outputs, targets):
    """``(log(1 + y) - log(1 + t)) ** 2`` averaged over the last axis (Keras's ``msle``).

    Values below 1e-7 are raised to 1e-7 before the log, as in Keras.

    Args:
      outputs: predictions ``(B,)`` or ``(B, ...)``.
      targets: targets with as many elements as ``outputs``.

    Returns:
      The loss averaged over the last axis, as `mean_squared_error`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.losses import mean_squared_logarithmic_error
      >>> mean_squared_logarithmic_error(jnp.array([[0.0, 2.0]]), jnp.array([[0.0, 0.0]])).round(4).tolist()
      [0.6035]
    """
    t = _same_shape(outputs, targets)
    first = jnp.log(jnp.maximum(outputs, _EPS) + 1.0)
    second = jnp.log(jnp.maximum(t, _EPS) + 1.0)
    return _mean_last(jnp.square(first - second))
