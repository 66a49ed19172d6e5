"""`ShardedEngine`: the loop's steps under ``jax.jit`` with the batch split over a mesh.

Parameters, optimizer state and metric sums are replicated (``P()``) and every
batch is split along its rows over the mesh's ``'data'`` axis
(``P('data')``). The steps themselves are the single-device ones: under
``jax.jit`` a sharded array is still the global batch, so the mean loss, its
gradient and the BatchNorm statistics are those of the whole batch, and XLA
inserts the all-reduces. A batch whose row count is not a multiple of the
device count is padded with masked rows (`jaxnets.data.batching.pad_to`); the
loss stays the masked sum over the real rows. Dropout masks do not depend on
the number of devices because ``jax_threefry_partitionable`` (on by default)
makes random bits independent of how an array is sharded.

Across processes the engine is the same program: each process passes its own
rows to ``place_batch``, which builds the global batch with
``jax.make_array_from_process_local_data`` and an explicit global shape.

Example:
  >>> import numpy as np, flax.linen as nn
  >>> from jaxnets.training import create_train_state, fit
  >>> x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
  >>> y = (x[:, 0] > 0).astype(np.int32)
  >>> engine = ShardedEngine(devices=4)
  >>> state = create_train_state(nn.Dense(2), "sgd", x[:1], learning_rate=0.1)
  >>> state, history = fit(state, (x, y), batch_size=10, verbose=0, engine=engine)
  >>> engine.batch_multiple, state.params["kernel"].sharding.is_fully_replicated
  (4, True)
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import jax
import numpy as np

from jaxnets.data.batching import pad_to
from jaxnets.errors import ConfigError
from jaxnets.parallel import mesh as mesh_lib
from jaxnets.parallel import step as pstep
from jaxnets.training import inference, loop, step
from jaxnets.training.engine import LocalEngine


def check_accumulate(accumulate) -> int:
    if isinstance(accumulate, bool) or not isinstance(accumulate, int | np.integer):
        raise ConfigError(f"accumulate must be a positive int, got {accumulate!r}.")
    if accumulate < 1:
        raise ConfigError(f"accumulate must be >= 1 (microbatches per step), got {accumulate}.")
    return int(accumulate)


class ShardedEngine(LocalEngine):
    """Runs every step under ``jax.jit`` on a mesh: batch on ``'data'``, the rest replicated.

    Args:
      mesh: a `jax.sharding.Mesh` with a ``'data'`` axis; default one over ``devices``.
      devices: ``None`` (all devices), a count, or a list (see
        `jaxnets.parallel.mesh.resolve_devices`); only without ``mesh``.
      accumulate: split each batch into this many microbatches and sum their
        gradients before one update (`jaxnets.parallel.step`).

    Attributes:
      batch_multiple: ``place_batch`` pads this process's batch up to a
        multiple of it (its devices on the ``'data'`` axis times ``accumulate``).
    """

    kind = "jit"

    def __init__(self, mesh=None, *, devices=None, accumulate: int = 1):
        super().__init__()
        if mesh is not None and devices is not None:
            raise ConfigError("pass either mesh or devices, not both.")
        self.mesh = mesh_lib.check_mesh(mesh) if mesh is not None else mesh_lib.make_mesh(devices)
        self.accumulate = check_accumulate(accumulate)
        self.num_devices = mesh_lib.data_size(self.mesh)
        self.local_devices = mesh_lib.local_data_size(self.mesh)
        self.batch_multiple = self.local_devices * self.accumulate
        self.replicated = mesh_lib.replicated(self.mesh)
        self.batch_sharding = mesh_lib.batch_sharding(self.mesh)
        if self.num_devices > 1 and not jax.config.jax_threefry_partitionable:
            warnings.warn(
                "jax_threefry_partitionable is off: dropout masks will depend on the number "
                "of devices. Turn it on with jax.config.update('jax_threefry_partitionable', True).",
                RuntimeWarning,
                stacklevel=2,
            )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(devices={self.num_devices}, processes={jax.process_count()}, "
            f"accumulate={self.accumulate})"
        )

    def describe(self) -> str:
        """One line for logs: engine, devices, processes, accumulation."""
        text = f"{self.kind} engine on {self.num_devices} device(s)"
        if jax.process_count() > 1:
            text += f" in {jax.process_count()} processes"
        return text + (f", {self.accumulate} microbatches per step" if self.accumulate > 1 else "")

    # The loop's functions this engine knows how to place: (target, in/out shardings).
    def program(self, fn: Callable):
        """The function to compile for ``fn`` with its input and output shardings.

        The loop's step functions get explicit shardings (state and sums
        replicated, batches and predictions split); any other function is
        compiled as given and left to sharding propagation.
        """
        rep, bat = self.replicated, self.batch_sharding
        opts = {"accumulate": self.accumulate}
        if self.accumulate > 1:
            opts["microbatch_sharding"] = mesh_lib.microbatch_sharding(self.mesh)
        table = {
            loop.train_and_accumulate: (
                functools.partial(pstep.train_and_accumulate, **opts)
                if self.accumulate > 1
                else fn,
                (rep, rep, bat),
                (rep, rep),
            ),
            step.train_step: (
                functools.partial(pstep.global_train_step, **opts) if self.accumulate > 1 else fn,
                (rep, bat),
                (rep, rep),
            ),
            inference.eval_and_accumulate: (fn, (rep, rep, bat), rep),
            step.eval_step: (fn, (rep, bat), rep),
            step.predict_step: (fn, (rep, bat), bat),
        }
        return table.get(fn, (fn, None, None))

    def compile(self, fn: Callable, donate_argnums: tuple[int, ...] = ()) -> Callable:
        """``jax.jit`` of ``fn`` (or its data-parallel version), built once and reused."""
        key = (fn, donate_argnums)
        if key not in self._compiled:
            target, ins, outs = self.program(fn)
            if ins is None:
                self._compiled[key] = jax.jit(target, donate_argnums=donate_argnums)
            else:
                self._compiled[key] = jax.jit(
                    target, donate_argnums=donate_argnums, in_shardings=ins, out_shardings=outs
                )
        return self._compiled[key]

    def check_data(self, arrays: dict, batch_size: int) -> None:
        """With several processes: every process must hold as many rows of the same shapes."""
        if jax.process_count() > 1:
            from jaxnets.parallel.distributed import check_same_data

            check_same_data(arrays, batch_size, local_devices=self.local_devices)

    def place_state(self, state):
        """Replicates a state (or any pytree) on every device of the mesh (of every process)."""
        if jax.process_count() == 1:
            return jax.device_put(state, self.replicated)
        return jax.tree.map(self._replicate_global, state)

    def _replicate_global(self, x):
        # device_put cannot move a committed local array onto other processes' devices:
        # rebuild it from this process's host copy (every process holds the same value).
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return x if x.sharding == self.replicated else jax.device_put(x, self.replicated)
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = self._replicate_global(jax.random.key_data(x))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        host = np.asarray(jax.device_get(x))
        return jax.make_array_from_process_local_data(self.replicated, host, host.shape)

    def padded_size(self, rows: int) -> int:
        """``rows`` rounded up to a multiple of `batch_multiple`."""
        return -(-rows // self.batch_multiple) * self.batch_multiple

    def place_batch(self, batch: dict):
        """Pads this process's rows to `batch_multiple` and builds the global, row-split batch."""
        rows = len(next(iter(batch.values())))
        size = self.padded_size(rows)
        if size != rows:
            batch = pad_to(batch, size)
        global_rows = size // self.local_devices * self.num_devices

        def place(x):
            x = np.asarray(x)
            shape = (global_rows, *x.shape[1:])
            return jax.make_array_from_process_local_data(self.batch_sharding, x, shape)

        return {k: place(v) for k, v in batch.items()}

    def fetch(self, tree):
        """Host numpy values; a row-split array spanning processes gives this process's rows."""
        if jax.process_count() == 1:
            return jax.device_get(tree)
        return jax.tree.map(local_value, tree)


def local_value(x):
    """The host value of ``x``: whole if replicated or addressable, else this process's rows."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(jax.device_get(x))
    pieces = {}
    for shard in x.addressable_shards:
        start = (shard.index[0].start or 0) if shard.index else 0
        pieces.setdefault(start, shard.data)
    return np.concatenate([np.asarray(pieces[k]) for k in sorted(pieces)])
