"""Engines: where the pure steps run and how data gets there.

The training loop never calls ``jax.jit`` or ``device_put`` itself; it asks an
engine. `LocalEngine` runs on one device; `jaxnets.parallel` provides engines
that shard the batch over a device mesh (``jit`` + ``NamedSharding``) or use
``pmap``. Compiled functions are cached per engine so that calling ``fit``
twice does not compile twice.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from jaxnets.errors import ConfigError


class LocalEngine:
    """Runs every step jit-compiled on one device (the default device).

    Example:
      >>> import numpy as np
      >>> from jaxnets.training import LocalEngine
      >>> engine = LocalEngine()
      >>> double = lambda batch: {"x": batch["x"] * 2}
      >>> step = engine.compile(double)
      >>> step is engine.compile(double)  # compiled once, reused
      True
      >>> engine.fetch(step(engine.place_batch({"x": np.arange(3)})))["x"].tolist()
      [0, 2, 4]
    """

    # Batches are split over this many devices: engines with several pad each
    # batch in ``place_batch`` up to a multiple of it (padding rows masked).
    batch_multiple: int = 1

    def __init__(self):
        self._compiled: dict[tuple[Callable, tuple], Callable] = {}

    def compile(self, fn: Callable, donate_argnums: tuple[int, ...] = ()) -> Callable:
        """``jax.jit(fn)``, built once per (fn, donation) and reused."""
        key = (fn, donate_argnums)
        if key not in self._compiled:
            self._compiled[key] = jax.jit(fn, donate_argnums=donate_argnums)
        return self._compiled[key]

    def check_data(self, arrays: dict, batch_size: int) -> None:
        """Validates the data a loop is about to iterate; nothing to check on one device.

        Multi-process engines check here that every process holds as many rows
        of the same shapes (else their step counts would differ and they would hang).
        """

    def place_state(self, state):
        """Puts a state (or any replicated pytree) on the device."""
        return jax.device_put(state)

    def place_batch(self, batch: dict):
        """Puts a host batch (dict of numpy arrays) on the device."""
        return jax.device_put(batch)

    def fetch(self, tree):
        """Brings a pytree back to the host as numpy arrays."""
        return jax.device_get(tree)


_DEFAULT = LocalEngine()


def default_engine() -> LocalEngine:
    """The process-wide single-device engine (shared so compiles are reused).

    Example:
      >>> from jaxnets.training import LocalEngine, default_engine
      >>> default_engine() is default_engine(), isinstance(default_engine(), LocalEngine)
      (True, True)
    """
    return _DEFAULT


def resolve_engine(engine=None, devices=None, mesh=None):
    """The engine a loop runs on: ``engine`` if given, else one over ``devices`` or
    ``mesh`` (`jaxnets.parallel.make_engine`: jit + NamedSharding), else one device."""
    if engine is not None:
        if devices is not None or mesh is not None:
            raise ConfigError("pass either engine= or devices=/mesh=, not both.")
        return engine
    if devices is None and mesh is None:
        return default_engine()
    if devices == "all":
        devices = len(jax.devices())
    from jaxnets.parallel import make_engine  # imports the sharding machinery on demand

    return make_engine(devices=devices, mesh=mesh)
