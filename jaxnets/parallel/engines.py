"""`make_engine`: pick where `fit`, `evaluate` and `predict` run, by name and device count.

Engines are cached by their arguments, so two ``fit`` calls with
``make_engine(devices=8)`` share compiled steps (nothing recompiles).

Example:
  >>> make_engine(devices=4)
  ShardedEngine(devices=4, processes=1, accumulate=1)
  >>> make_engine(devices=4) is make_engine(devices=4)
  True
  >>> type(make_engine(devices=1)).__name__
  'LocalEngine'
  >>> make_engine(engine="pmpa")
  Traceback (most recent call last):
  ...
  jaxnets.errors.UnknownNameError: unknown engine 'pmpa'; did you mean 'pmap'? Valid engines: jit, local, pmap.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

from jaxnets.errors import ConfigError, lookup
from jaxnets.parallel import mesh as mesh_lib
from jaxnets.parallel.pmap_engine import PmapEngine
from jaxnets.parallel.sharded import ShardedEngine, check_accumulate
from jaxnets.training.engine import default_engine

ENGINES = {"jit": ShardedEngine, "pmap": PmapEngine, "local": None}

_CACHE: dict[tuple, object] = {}


def make_engine(
    devices: None | int | Sequence = None,
    engine: str = "jit",
    mesh=None,
    *,
    accumulate: int = 1,
):
    """The engine for ``devices``: ``jit`` + `NamedSharding` by default, ``pmap`` or ``local``.

    Args:
      devices: ``None`` for every device (all processes), a count ``n`` (the
        first ``n`` of `jax.devices`), or a list of devices.
      engine: ``'jit'`` (`ShardedEngine`), ``'pmap'`` (`PmapEngine`) or
        ``'local'`` (one device, `jaxnets.training.LocalEngine`).
      mesh: a `jax.sharding.Mesh` with a ``'data'`` axis (jit engine only)
        instead of ``devices``.
      accumulate: gradient-accumulation microbatches per step.

    One device without accumulation gives the shared single-device engine,
    whatever ``engine`` names (except across processes).
    """
    lookup(engine, ENGINES, kind="engine")
    kind = engine.lower()
    accumulate = check_accumulate(accumulate)
    if mesh is not None:
        if kind != "jit":
            raise ConfigError(f"a mesh is only used by the jit engine, not {kind!r}.")
        if devices is not None:
            raise ConfigError("pass either mesh or devices, not both.")
        key = ("mesh", mesh, accumulate)
        if key not in _CACHE:
            _CACHE[key] = ShardedEngine(mesh, accumulate=accumulate)
        return _CACHE[key]
    if kind == "local":
        if devices not in (None, 1):
            raise ConfigError(f"the local engine runs on one device, got devices={devices!r}.")
        devices = 1
    chosen = mesh_lib.resolve_devices(devices)
    if len(chosen) == 1 and accumulate == 1 and jax.process_count() == 1:
        return default_engine()
    if kind == "local":
        kind = "jit"  # one device with microbatches: the jit engine on a 1-device mesh
    key = (kind, tuple(d.id for d in chosen), accumulate)
    if key not in _CACHE:
        cls = ShardedEngine if kind == "jit" else PmapEngine
        _CACHE[key] = cls(devices=chosen, accumulate=accumulate)
    return _CACHE[key]
