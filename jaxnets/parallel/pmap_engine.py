"""`PmapEngine`: the loop's steps under ``jax.pmap`` with explicit collectives.

``pmap`` is JAX's legacy data-parallel transform (now built on ``shard_map``);
``jax.jit`` with shardings (`ShardedEngine`) is the default and was many
times faster per step on CPU. This engine exists for comparison and for code
written around ``pmap``: it gives the same numbers as the jit engine.

Each device runs `jaxnets.parallel.step.global_train_step` on its slice of
the batch with ``axis_name='data'``: it differentiates its share of the
global masked loss and the shares' gradients are summed with ``psum``;
metric sums are ``psum``-ed and model state (BatchNorm running statistics)
``pmean``-ed. The step runs the model inside `jaxnets.layers.replicas.split_over`:
jaxnets' BatchNormalization then averages batch statistics over devices and
its Dropout keeps this device's rows of the whole batch's mask, so results do
not depend on the device count. (Flax's ``nn.BatchNorm`` syncs only when built
with ``axis_name='data'``; Flax's ``nn.Dropout`` draws per device, from a key
with the device index folded in.)

State, sums and batches live as global arrays exactly as with the jit engine
(the same ``place_state``/``place_batch``/``fetch``); the compiled function
reshapes the batch to ``(devices, rows per device, ...)`` and calls ``pmap``
with the state unmapped (``in_axes=None``), so the state ``fit`` returns has
no device axis.

Example:
  >>> import numpy as np, flax.linen as nn
  >>> from jaxnets.training import create_train_state, fit
  >>> x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
  >>> y = (x[:, 0] > 0).astype(np.int32)
  >>> state = create_train_state(nn.Dense(2), "sgd", x[:1], learning_rate=0.1)
  >>> state, history = fit(state, (x, y), batch_size=8, verbose=0, engine=PmapEngine(devices=4))
  >>> state.params["kernel"].shape
  (3, 2)
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax

from jaxnets.errors import ConfigError
from jaxnets.parallel import mesh as mesh_lib
from jaxnets.parallel import step as pstep
from jaxnets.parallel.sharded import ShardedEngine
from jaxnets.training import inference, loop, step


class PmapEngine(ShardedEngine):
    """Runs every step under ``jax.pmap(axis_name='data')``, in one process.

    Args:
      devices: ``None`` (all devices), a count, or a list of devices.
      accumulate: microbatches per step (each device splits its slice).
    """

    kind = "pmap"
    axis_name = mesh_lib.DATA_AXIS

    def __init__(self, devices=None, *, accumulate: int = 1):
        if jax.process_count() > 1:
            raise ConfigError(
                "the pmap engine runs in a single process; use engine='jit' (the default) "
                "for multi-process runs."
            )
        super().__init__(devices=devices, accumulate=accumulate)
        self.devices = tuple(self.mesh.devices.flat)

    def _pmap(self, fn, in_axes, out_axes):
        return jax.pmap(
            fn, axis_name=self.axis_name, in_axes=in_axes, out_axes=out_axes, devices=self.devices
        )

    def _per_device(self, batch):
        n = self.num_devices
        return jax.tree.map(lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:]), batch)

    def program(self, fn: Callable):
        """The jit-wrapped ``pmap`` program for one of the loop's step functions."""
        rep, bat, ax = self.replicated, self.batch_sharding, self.axis_name
        train = functools.partial(
            pstep.train_and_accumulate, axis_name=ax, accumulate=self.accumulate
        )
        if fn is loop.train_and_accumulate:
            mapped = self._pmap(train, (None, None, 0), (None, None))
            return (
                (lambda st, s, b: mapped(st, s, self._per_device(b))),
                (rep, rep, bat),
                (rep, rep),
            )
        if fn is step.train_step:
            one = functools.partial(pstep.pmap_train_step, axis_name=ax, accumulate=self.accumulate)
            mapped = self._pmap(one, (None, 0), (None, None))
            return (lambda st, b: mapped(st, self._per_device(b))), (rep, bat), (rep, rep)
        if fn is inference.eval_and_accumulate:
            ev = functools.partial(pstep.pmap_eval_and_accumulate, axis_name=ax)
            mapped = self._pmap(ev, (None, None, 0), None)
            return (lambda st, s, b: mapped(st, s, self._per_device(b))), (rep, rep, bat), rep
        if fn is step.eval_step:
            mapped = self._pmap(
                functools.partial(pstep.pmap_eval_step, axis_name=ax), (None, 0), None
            )
            return (lambda st, b: mapped(st, self._per_device(b))), (rep, bat), rep
        if fn is step.predict_step:
            mapped = self._pmap(step.predict_step, (None, 0), 0)

            def predict(st, b):
                out = mapped(st, self._per_device(b))
                return jax.tree.map(lambda o: o.reshape(-1, *o.shape[2:]), out)

            return predict, (rep, bat), bat
        raise ConfigError(
            f"the pmap engine runs the training loop's steps (train, eval, predict); "
            f"it has no per-device version of {getattr(fn, '__name__', fn)!r}. "
            "Use engine='jit' to compile other functions."
        )
