"""Data parallelism over devices and processes: engines, meshes, multi-process start-up.

`make_engine` returns what ``fit``/``evaluate``/``predict`` take as ``engine=``:
`ShardedEngine` (``jax.jit`` with the batch split over a `Mesh`, the default),
`PmapEngine` (``jax.pmap`` with ``psum``/``pmean``) or the single-device
engine. `initialize` joins several processes into one runtime and
`process_shard` gives each its rows; `jaxnets.parallel.launch` starts local
processes. Names load lazily so that ``python -m jaxnets.parallel.launch``
starts without importing JAX.

Example:
  >>> import numpy as np, flax.linen as nn
  >>> from jaxnets import parallel
  >>> from jaxnets.training import create_train_state, fit
  >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
  >>> y = (x[:, 0] > 0).astype(np.int32)
  >>> state = create_train_state(nn.Dense(2), "adam", x[:1], learning_rate=0.1)
  >>> engine = parallel.make_engine(devices=8)
  >>> state, history = fit(state, (x, y), epochs=2, batch_size=16, verbose=0, engine=engine)
  >>> engine.describe()
  'jit engine on 8 device(s)'
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "make_engine": "engines",
    "ShardedEngine": "sharded",
    "PmapEngine": "pmap_engine",
    "make_mesh": "mesh",
    "resolve_devices": "mesh",
    "initialize": "distributed",
    "is_main_process": "distributed",
    "local_batch_size": "distributed",
    "process_shard": "distributed",
    "check_same_data": "distributed",
    "assert_same_config": "distributed",
    "global_train_step": "step",
    "Run": "run",
    "start": "run",
    "launch": "launch",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"jaxnets.parallel.{_EXPORTS[name]}")
        value = module if name == _EXPORTS[name] else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jaxnets.parallel' has no attribute {name!r}")


def __dir__():
    return __all__
