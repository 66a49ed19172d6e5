"""Device meshes and the two shardings data parallelism needs.

Data parallelism on a `jax.sharding.Mesh` with a ``'data'`` axis: the batch is
split along its first axis over ``'data'`` (``P('data')``), while parameters,
optimizer state and metric sums are replicated (``P()``). Gradient
accumulation lays a batch out as microbatches ``(K, B/K, ...)`` split along
their second axis (``P(None, 'data')``).

Example:
  >>> import jax
  >>> mesh = make_mesh(4)
  >>> dict(mesh.shape), data_size(mesh)
  ({'data': 4}, 4)
  >>> batch_sharding(mesh).spec, replicated(mesh).spec
  (P('data',), P())
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxnets.errors import ConfigError

DATA_AXIS = "data"


def resolve_devices(devices: None | int | Sequence = None) -> list:
    """The devices a data-parallel engine runs on.

    Args:
      devices: ``None`` for every device (of every process), an int ``n`` for
        the first ``n`` of `jax.devices`, or a list of `jax.Device` objects.

    Example:
      >>> [d.id for d in resolve_devices(2)]
      [0, 1]
    """
    available = jax.devices()
    if devices is None:
        return list(available)
    if isinstance(devices, bool) or not isinstance(devices, int | np.integer | Sequence):
        raise ConfigError(
            f"devices must be None (all), a device count or a list of devices, "
            f"got {type(devices).__name__}: {devices!r}."
        )
    if isinstance(devices, int | np.integer):
        if not 1 <= devices <= len(available):
            raise ConfigError(
                f"devices={devices} but {len(available)} device(s) are visible "
                f"({available[0].platform}); pass 1 to {len(available)}, or None for all. "
                "On CPU, set JAX_NUM_CPU_DEVICES=N before JAX starts to get N fake devices."
            )
        chosen = list(available[:devices])
    else:
        chosen = list(devices)
        if not chosen:
            raise ConfigError("devices is an empty list; pass at least one device.")
        if len({d.id for d in chosen}) != len(chosen):
            raise ConfigError(f"devices lists a device twice: {[d.id for d in chosen]}.")
    if jax.process_count() > 1:
        procs = {d.process_index for d in chosen}
        if procs != set(range(jax.process_count())):
            raise ConfigError(
                f"a multi-process run needs devices of every process (0 to "
                f"{jax.process_count() - 1}); the chosen devices belong to {sorted(procs)}. "
                "Pass devices=None to use them all."
            )
    return chosen


def make_mesh(devices: None | int | Sequence = None, axis_name: str = DATA_AXIS) -> Mesh:
    """A one-axis mesh over ``devices`` (see `resolve_devices`) named ``axis_name``.

    The mesh uses the default ``Auto`` axis type (``jax.sharding.Mesh``), so
    shardings propagate through ``jax.jit`` without explicit annotations.
    """
    return Mesh(np.array(resolve_devices(devices)), (axis_name,))


def check_mesh(mesh: Mesh) -> Mesh:
    """Checks that a user-supplied mesh has a ``'data'`` axis to split batches over."""
    if not isinstance(mesh, Mesh):
        raise ConfigError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}.")
    if DATA_AXIS not in mesh.axis_names:
        raise ConfigError(
            f"the mesh needs a {DATA_AXIS!r} axis to split batches over; its axes are "
            f"{mesh.axis_names}. Build it with jaxnets.parallel.make_mesh()."
        )
    return mesh


def data_size(mesh: Mesh) -> int:
    """How many ways the batch is split (the size of the ``'data'`` axis)."""
    return int(mesh.shape[DATA_AXIS])


def local_data_size(mesh: Mesh) -> int:
    """How many of those splits this process holds: its local batch is a multiple of it."""
    local = mesh.local_mesh
    return int(local.shape[DATA_AXIS])


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array: parameters, optimizer state, metric sums."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows split over the ``'data'`` axis; the other axes whole."""
    return NamedSharding(mesh, P(DATA_AXIS))


def microbatch_sharding(mesh: Mesh) -> NamedSharding:
    """Microbatches ``(K, B/K, ...)``: each microbatch's rows split over ``'data'``."""
    return NamedSharding(mesh, P(None, DATA_AXIS))
