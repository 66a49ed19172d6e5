"""Model hyperparameters that live in the training state instead of the module.

A Flax module's fields are static: two dropout rates are two programs. For a
population (`jaxnets.population.fit_population`), where every member should
have its own rate inside one vmapped program, the rate must be an array. The
training step therefore calls the model inside `inject`, with the arrays of
``TrainState.hparams``; while it is active, every `jaxnets.layers.Dropout`
uses the injected ``dropout_rate`` in place of its own ``rate``. The value is
read at trace time, so under ``vmap`` each member sees its own rate.

Only jaxnets' own layers read it: ``flax.linen.Dropout`` keeps its static rate.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxnets.layers import Dropout
  >>> layer, x = Dropout(0.5), jnp.ones((1000,))
  >>> def dropped(rate):
  ...     with inject({"dropout_rate": rate}):
  ...         y = layer.apply({}, x, train=True, rngs={"dropout": jax.random.key(0)})
  ...     return (y == 0).mean()
  >>> [round(float(f), 1) for f in jax.vmap(dropped)(jnp.array([0.0, 0.2, 0.9]))]
  [0.0, 0.2, 0.9]
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping

# Names a TrainState's ``hparams`` may hold, and what each must be.
MODEL_HYPERPARAMS = {"dropout_rate": "a float in [0, 1): the fraction of inputs Dropout zeroes"}

_ACTIVE: contextvars.ContextVar[Mapping | None] = contextvars.ContextVar(
    "jaxnets_model_hyperparams", default=None
)


@contextlib.contextmanager
def inject(values: Mapping | None) -> Iterator[None]:
    """While active, layers read ``values`` (e.g. ``{"dropout_rate": 0.3}``)."""
    token = _ACTIVE.set(dict(values or {}))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


_READ: contextvars.ContextVar[set | None] = contextvars.ContextVar(
    "jaxnets_model_hyperparams_read", default=None
)


@contextlib.contextmanager
def record() -> Iterator[set]:
    """Collects the names that layers read from an `inject`.

    A caller can then tell that a model has no layer for a hyperparameter it was given.
    """
    names: set = set()
    token = _READ.set(names)
    try:
        yield names
    finally:
        _READ.reset(token)


def get(name: str, default):
    """The injected value of ``name`` (an array or a number), else ``default``."""
    active = _ACTIVE.get()
    if active is None or name not in active:
        return default
    if (names := _READ.get()) is not None:
        names.add(name)
    return active[name]
