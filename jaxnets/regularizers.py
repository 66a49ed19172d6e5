"""Keras weight regularizers: a layer's ``kernel_regularizer=`` and friends.

A regularized layer adds ``regularizer(weight)`` to the training loss, once per
step, as Keras does: ``loss = mean data loss + sum of the penalties`` (the
logged ``loss`` and ``val_loss`` include them too). The layers put each
penalty into the Flax ``'losses'`` collection (``Module.sow``);
`jaxnets.training.train_step` sums that collection into the loss, so a plain
Flax module can add terms of its own the same way.

Accepted values: None, ``"l1"``, ``"l2"``, ``"l1_l2"`` (Keras's default factor
0.01), ``L1(0.001)``, ``L2(0.001)``, ``L1L2(l1=..., l2=...)`` (also spelled
``l1(...)``, ``l2(...)``, ``l1_l2(...)`` as in ``keras.regularizers``), or a
function of the weight returning a scalar (not saved by ``model.save``).

Example:
  >>> import jax.numpy as jnp
  >>> w = jnp.array([[1.0, -2.0], [0.5, 0.0]])
  >>> float(L2(0.1)(w)), float(L1(0.1)(w)), float(get("l1_l2")(w))
  (0.525..., 0.35, 0.0875)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxnets.errors import ConfigError

COLLECTION = "losses"


@dataclasses.dataclass(frozen=True)
class L1L2:
    """``l1 * sum(|w|) + l2 * sum(w ** 2)``, computed in float32 (Keras ``L1L2``).

    Attributes:
      l1, l2: the factors (numbers >= 0).

    Example:
      >>> float(L1L2(l1=0.5, l2=0.25)(jnp.array([1.0, -2.0])))
      2.75
    """

    l1: float = 0.0
    l2: float = 0.0

    def __post_init__(self):
        for name in ("l1", "l2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ConfigError(
                    f"regularizer factor {name} must be a number >= 0, got {value!r}."
                )

    def __call__(self, weight):
        w = jnp.asarray(weight, jnp.float32)
        total = jnp.zeros((), jnp.float32)
        if self.l1:
            total += self.l1 * jnp.sum(jnp.abs(w))
        if self.l2:
            total += self.l2 * jnp.sum(jnp.square(w))
        return total


def L1(l1: float = 0.01) -> L1L2:  # noqa: N802 (Keras's class name)
    """Keras ``L1``: ``l1 * sum(|w|)``.

    Args:
      l1: the factor (default 0.01, Keras's).

    Example:
      >>> L1(0.5)
      L1L2(l1=0.5, l2=0.0)
    """
    return L1L2(l1=l1)


def L2(l2: float = 0.01) -> L1L2:  # noqa: N802 (Keras's class name)
    """Keras ``L2``: ``l2 * sum(w ** 2)``.

    Args:
      l2: the factor (default 0.01, Keras's).

    Example:
      >>> L2()
      L1L2(l1=0.0, l2=0.01)
    """
    return L1L2(l2=l2)


l1, l2 = L1, L2


def l1_l2(l1: float = 0.01, l2: float = 0.01) -> L1L2:
    """Keras ``l1_l2``: both penalties, 0.01 each by default.

    Args:
      l1, l2: the factors.

    Example:
      >>> l1_l2(l2=0.1)
      L1L2(l1=0.01, l2=0.1)
    """
    return L1L2(l1=l1, l2=l2)


_NAMES = {"l1": L1, "l2": L2, "l1_l2": l1_l2, "l1l2": l1_l2}


def get(identifier) -> Callable | None:
    """The regularizer for a layer argument (see the module docstring); `ConfigError` otherwise.

    Args:
      identifier: None, a name ('l1', 'l2', 'l1_l2'), an `L1L2` or a function
        of the weight.

    Example:
      >>> get(None) is None, get("l2")
      (True, L1L2(l1=0.0, l2=0.01))
    """
    if identifier is None or callable(identifier):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _NAMES:
        return _NAMES[identifier.lower()]()
    raise ConfigError(
        f"unknown regularizer {identifier!r}: expected None, 'l1', 'l2', 'l1_l2', "
        "jaxnets.regularizers.L1/L2/L1L2(...) or a function of the weight."
    )


def add_penalty(module, name: str, weight, regularizer) -> None:
    """Puts ``regularizer(weight)`` into ``module``'s ``'losses'`` collection (if any).

    Stored under ``<name>_regularizer``, replacing an earlier value: a layer
    called twice in one step (shared weights) still adds its penalty once, as
    a Keras weight regularizer does. Outside training the collection is not
    mutable and nothing is stored.

    Args:
      module: the Flax module (inside its ``compact`` method).
      name: the weight's name, e.g. ``"kernel"``.
      weight: the weight's value.
      regularizer: anything `get` accepts; None adds nothing.

    Example:
      >>> import flax.linen as nn
      >>> class Scale(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x):
      ...         w = self.param("w", nn.initializers.ones, (2,))
      ...         add_penalty(self, "w", w, "l2")
      ...         return x * w
      >>> v = Scale().init(jax.random.key(0), jnp.ones(2))
      >>> _, sown = Scale().apply({"params": v["params"]}, jnp.ones(2), mutable=["losses"])
      >>> round(float(total(sown)), 4)  # 0.01 * (1 + 1)
      0.02
    """
    fn = get(regularizer)
    if fn is None:
        return
    module.sow(
        COLLECTION,
        f"{name}_regularizer",
        fn(weight),
        init_fn=lambda: jnp.zeros((), jnp.float32),
        reduce_fn=lambda _, new: new,
    )


def total(collection) -> jax.Array:
    """The sum of every value in a ``'losses'`` collection (0 when empty).

    Args:
      collection: the collection (a nested dict of arrays), or ``{}``.

    Example:
      >>> float(total({"a": {"kernel_regularizer": jnp.float32(0.5)}})), float(total({}))
      (0.5, 0.0)
    """
    leaves = jax.tree.leaves(collection)
    out = jnp.zeros((), jnp.float32)
    for leaf in leaves:
        out += jnp.sum(jnp.asarray(leaf, jnp.float32))
    return out
