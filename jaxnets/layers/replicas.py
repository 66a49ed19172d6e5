"""Batch-wide layers under ``pmap``: each replica holds a slice of the batch.

Under ``jax.jit`` with a sharded batch, BatchNorm and Dropout see the global
batch and need nothing special. Under ``pmap`` (`jaxnets.parallel.PmapEngine`)
each device runs the model on its own rows, so two things would change with
the device count: batch statistics (each device's slice) and dropout masks
(drawn per slice). The data-parallel step wraps the model call in
`split_over`; while it is active, `BatchNormalization` averages its batch
statistics over the axis and `Dropout` draws the mask of the *global* batch
from the replicated key stream `REPLICATED_RNG` and keeps its own rows, so a
pmap run gives the numbers of one device. The setting is read at trace time;
it changes nothing for models without these layers.

The training step also sets `real_rows` around the model call, with the batch's
row mask (1 for real rows, 0 for the padding that fills the last partial batch
or a batch split over devices): `BatchNormalization` then takes its batch
statistics over the real rows only, so padding changes neither its outputs nor
its moving statistics.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxnets.layers import BatchNormalization
  >>> bn = BatchNormalization()
  >>> x = jnp.arange(8.0).reshape(4, 2, 1)  # 4 devices, 2 rows each
  >>> v = bn.init(jax.random.key(0), x[0])
  >>> def per_device(x):
  ...     with split_over("data"):
  ...         return bn.apply(v, x, train=True, mutable=["batch_stats"])[0]
  >>> y = jax.vmap(per_device, axis_name="data")(x)
  >>> float(y.mean()), float(y.reshape(-1).std().round(3))  # normalized over all 8 rows
  (0.0, 1.0)
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_AXIS: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "jaxnets_replica_axis", default=None
)
_ROW_MASK: contextvars.ContextVar = contextvars.ContextVar("jaxnets_row_mask", default=None)

# The key stream every replica shares (the ``'dropout'`` stream has the device index folded in).
REPLICATED_RNG = "replicated_dropout"


@contextlib.contextmanager
def split_over(axis_name: str) -> Iterator[None]:
    """While active, batch-wide layers treat the batch as split over ``axis_name``."""
    token = _AXIS.set(axis_name)
    try:
        yield
    finally:
        _AXIS.reset(token)


def replica_axis() -> str | None:
    """The axis the batch is split over (inside `split_over`), else None."""
    return _AXIS.get()


@contextlib.contextmanager
def real_rows(mask) -> Iterator[None]:
    """While active, batch statistics count only the rows (axis 0) where ``mask`` is 1.

    ``mask`` is the batch's `(B,)` row mask (1.0 real, 0.0 padding), a traced
    array in the training step; under ``pmap`` it is this device's slice.
    Layers whose input does not have ``B`` rows ignore it.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.layers import BatchNormalization
      >>> bn, x = BatchNormalization(momentum=0.0), jnp.array([[0.0], [2.0], [2.0]])
      >>> v = bn.init(jax.random.key(0), x)
      >>> with real_rows(jnp.array([1.0, 1.0, 0.0])):  # the last row is padding
      ...     _, new = bn.apply(v, x, train=True, mutable=["batch_stats"])
      >>> new["batch_stats"]["mean"].tolist(), new["batch_stats"]["var"].tolist()
      ([1.0], [1.0])
    """
    token = _ROW_MASK.set(mask)
    try:
        yield
    finally:
        _ROW_MASK.reset(token)


def row_mask():
    """The row mask of the enclosing `real_rows`, else None (every row is real).

    Example:
      >>> row_mask() is None
      True
    """
    return _ROW_MASK.get()
