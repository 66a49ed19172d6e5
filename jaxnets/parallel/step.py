"""Data-parallel training steps: the global masked loss, microbatches and ``pmap`` collectives.

`jaxnets.training.train_step` differentiates the mean loss of the batch it
sees. That is right under ``jax.jit`` with a sharded batch (the batch is the
global one), but wrong in two cases handled here:

* under ``pmap`` each device sees a slice, and a mean of per-device means is
  not the global mean once padding rows are masked. The step differentiates
  each device's share of the *global* loss (its masked sum over the global
  count, a ``psum``) and adds the shares' gradients with ``psum``. (Averaging
  gradients of local means with ``pmean`` is only right when every device
  has as many real rows.)
* with gradient accumulation the batch is split into ``K`` microbatches laid
  out ``(K, B/K, ...)`` and scanned with ``lax.scan``; each microbatch's
  gradient is that of its share of the full batch's loss, so their sum is
  exactly the full-batch gradient.
* a per-step loss of sequences ``(B, T)`` with an ``x_mask`` weighs every
  valid step of the batch the same (`jaxnets.training.step.per_example_loss`
  scales each row by the batch's real rows over its valid steps); a slice or
  a microbatch takes that ratio from the whole batch (`step_totals`), not from
  its own rows, else the steps of a slice with fewer valid steps would weigh more.

Microbatch ``k`` holds rows ``k, k + K, k + 2K, ...``, so with the batch split
over devices every device keeps its own rows (no data moves between devices)
and each microbatch is the same set of rows on 1 or 8 devices. BatchNorm
normalizes each microbatch with its own statistics (as every accumulation
scheme does), over its real rows only (`loss_and_updates` passes each
microbatch's mask; a microbatch of padding only leaves the running statistics
as they were), so accumulation is exact for models without batch-dependent
layers.

Example:
  >>> import jax, jax.numpy as jnp, flax.linen as nn
  >>> from jaxnets.training import create_train_state, train_step
  >>> state = create_train_state(nn.Dense(2), "sgd", jnp.zeros((1, 3)), learning_rate=0.1)
  >>> batch = {"x": jnp.arange(24.0).reshape(8, 3) / 24, "y": jnp.arange(8) % 2,
  ...          "mask": jnp.ones(8)}
  >>> full, _ = jax.jit(train_step)(state, batch)
  >>> acc, sums = jax.jit(lambda s, b: global_train_step(s, b, accumulate=4))(state, batch)
  >>> bool(jnp.allclose(full.params["kernel"], acc.params["kernel"], atol=1e-6))
  True
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxnets import metrics as metrics_lib
from jaxnets import precision
from jaxnets.layers import replicas
from jaxnets.training.state import TrainState
from jaxnets.training.step import (
    apply_gradients,
    eval_step,
    loss_and_updates,
    metric_sums,
    per_example_loss,
    predict_step,
    predict_with_penalty,
)


def step_totals(batch: dict, axis_name: str | None = None):
    """``(real rows, valid steps of the real rows)`` of the whole batch, or None without ``x_mask``.

    Summed over ``axis_name`` under ``pmap``; computed before a batch is split
    into microbatches, so every slice scales its per-step losses alike.

    Example:
      >>> import numpy as np
      >>> batch = {"mask": np.array([1.0, 1.0, 0.0]), "x_mask": np.array([[1, 0], [1, 1], [1, 1]])}
      >>> [float(t) for t in step_totals(batch)]  # the padding row's steps do not count
      [2.0, 3.0]
    """
    x_mask = batch.get("x_mask")
    if x_mask is None or x_mask.ndim != 2:
        return None
    real = batch["mask"].astype(jnp.float32)
    valid = jnp.sum(x_mask.astype(jnp.float32), axis=-1)
    totals = (jnp.sum(real), jnp.sum(valid * real))
    return totals if axis_name is None else lax.psum(totals, axis_name)


def globally_weighted(state: TrainState, outputs, batch: dict, per_example, totals):
    """``per_example`` with a per-step loss weighted by the whole batch's ``totals``.

    `per_example_loss` gives each row ``row_mean * valid * R / V`` with ``R``
    real rows and ``V`` valid steps of the batch it sees; on a slice of the
    batch (a device's, a microbatch) that ratio must be the whole batch's so
    that the shares add up to its loss. Other losses are returned unchanged.
    """
    x_mask = batch.get("x_mask")
    if totals is None or x_mask is None:
        return per_example
    shape = jax.eval_shape(state.loss, outputs, batch["y"]).shape  # static: no computation
    if len(shape) < 2 or (shape[0], int(np.prod(shape[1:]))) != x_mask.shape:
        return per_example  # not a per-step loss the step mask applies to
    row_mean = per_example_loss(state, outputs, batch["y"], x_mask)
    valid = jnp.sum(x_mask.astype(row_mean.dtype), axis=-1)
    real, steps = totals
    return row_mean * valid * real / jnp.maximum(steps, 1.0)


def global_objective(params, state: TrainState, batch: dict, key, count, totals=None):
    """This batch's share of the global loss: its masked loss sum over the global ``count``.

    The L1/L2 penalty enters in proportion to the batch's real rows, so the
    shares of all devices (or microbatches) add up to the loss of the whole
    batch; per-step sequence losses use the whole batch's ``totals``
    (`step_totals`). Returns ``(share, (metric_sums, new_model_state))`` for ``jax.grad``.
    """
    _, (outputs, new_model_state, per_example, reg) = loss_and_updates(params, state, batch, key)
    per_example = globally_weighted(state, outputs, batch, per_example, totals)
    sums = metric_sums(state, outputs, batch, per_example, reg)
    return sums["loss"]["total"] / count, (sums, new_model_state)


def split_microbatches(batch: dict, accumulate: int, sharding=None) -> dict:
    """Lays every ``(B, ...)`` array out as ``(K, B/K, ...)``; microbatch ``k`` holds rows ``k::K``.

    Example:
      >>> import numpy as np
      >>> split_microbatches({"x": np.arange(6)}, 3)["x"].tolist()
      [[0, 3], [1, 4], [2, 5]]
    """

    def split(x):
        x = x.reshape(x.shape[0] // accumulate, accumulate, *x.shape[1:]).swapaxes(0, 1)
        return x if sharding is None else lax.with_sharding_constraint(x, sharding)

    return jax.tree.map(split, batch)


def _with_shared_rng(state: TrainState, key) -> TrainState:
    """``state`` whose model also gets ``key`` as the replicated RNG stream."""
    apply_fn = state.apply_fn

    def apply(variables, *args, rngs=None, **kwargs):
        return apply_fn(
            variables, *args, rngs={**(rngs or {}), replicas.REPLICATED_RNG: key}, **kwargs
        )

    return state.replace(apply_fn=apply)


def global_train_step(
    state: TrainState,
    batch: dict,
    *,
    accumulate: int = 1,
    axis_name: str | None = None,
    microbatch_sharding=None,
) -> tuple[TrainState, dict]:
    """One optimizer step on the global batch; returns the new state and the batch's metric sums.

    Args:
      state: the replicated `TrainState`.
      batch: the batch (under ``pmap``, this device's slice of it); its row
        count must be a multiple of ``accumulate``.
      accumulate: number of microbatches whose gradients are summed before
        the single optimizer update.
      axis_name: the ``pmap`` axis; gradients, metric sums and the real-row
        count are summed over it and the model state (BatchNorm statistics)
        averaged. ``None`` under ``jax.jit``, where the batch is global.
      microbatch_sharding: where the ``(K, B/K, ...)`` layout lives under
        ``jax.jit`` (``P(None, 'data')``, see `jaxnets.parallel.mesh`).
    """
    base_key = state.step_key()
    key = base_key
    if axis_name is not None:
        # Each device draws its own masks in layers that only know the 'dropout'
        # stream; jaxnets' Dropout draws from the shared stream instead.
        key = jax.random.fold_in(key, lax.axis_index(axis_name))
    count = jnp.sum(batch["mask"].astype(jnp.float32))
    if axis_name is not None:
        count = lax.psum(count, axis_name)
    count = jnp.maximum(count, 1.0)
    totals = step_totals(batch, axis_name)
    # Under float16 the loss is scaled and the gradients unscaled (jaxnets.precision).
    grad_fn = precision.value_and_grad(global_objective, state.loss_scale)

    def grads_of(model_state, rows, i=None):
        sub = state.replace(model_state=model_state)
        k, shared = key, base_key
        if i is not None:
            k, shared = jax.random.fold_in(k, i), jax.random.fold_in(shared, i)
        if axis_name is None:
            return grad_fn(state.params, sub, rows, k, count, totals)
        # BatchNorm and Dropout see the whole batch across devices (jaxnets.layers.replicas).
        with replicas.split_over(axis_name):
            return grad_fn(state.params, _with_shared_rng(sub, shared), rows, k, count, totals)

    if accumulate == 1:
        (_, (sums, new_model_state)), grads = grads_of(state.model_state, batch)
    else:
        micro = split_microbatches(batch, accumulate, microbatch_sharding)

        def body(carry, xs):
            total, model_state = carry
            mb, i = xs
            (_, (s, new_ms)), g = grads_of(model_state, mb, i)
            return (jax.tree.map(jnp.add, total, g), new_ms), s

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        carry = (zeros, state.model_state)
        (grads, new_model_state), stacked = lax.scan(body, carry, (micro, jnp.arange(accumulate)))
        sums = jax.tree.map(lambda s: s.sum(axis=0), stacked)
    if axis_name is not None:
        grads = lax.psum(grads, axis_name)
        sums = lax.psum(sums, axis_name)
        # Equal already for synced BatchNorm; kept replicated for other layers.
        new_model_state = lax.pmean(new_model_state, axis_name)
    loss = sums["loss"]["total"] / count
    return apply_gradients(state, grads, loss, new_model_state), sums


def train_and_accumulate(state, sums, batch, **step_options):
    """`global_train_step` plus adding its sums to a running total (the loop's fused step)."""
    state, batch_sums = global_train_step(state, batch, **step_options)
    return state, metrics_lib.merge(sums, batch_sums)


def _slice_eval_sums(state, batch, axis_name: str):
    """`eval_step` on this device's slice, per-step losses weighted by the whole batch."""
    totals = step_totals(batch, axis_name)
    if totals is None:
        return eval_step(state, batch)
    outputs, reg = predict_with_penalty(state, batch)
    per_example = per_example_loss(state, outputs, batch["y"], batch["x_mask"], batch["mask"])
    per_example = globally_weighted(state, outputs, batch, per_example, totals)
    return metric_sums(state, outputs, batch, per_example, reg)


def pmap_eval_and_accumulate(state, sums, batch, *, axis_name: str):
    """This device's eval sums, summed over ``axis_name`` and added to the running total."""
    return metrics_lib.merge(sums, pmap_eval_step(state, batch, axis_name=axis_name))


def pmap_eval_step(state, batch, *, axis_name: str):
    """The eval sums of the global batch under ``pmap``."""
    return lax.psum(_slice_eval_sums(state, batch, axis_name), axis_name)


def pmap_train_step(state, batch, *, axis_name: str, accumulate: int = 1):
    """`global_train_step` under ``pmap`` (the signature of `jaxnets.training.train_step`)."""
    return global_train_step(state, batch, accumulate=accumulate, axis_name=axis_name)


__all__ = [
    "global_objective",
    "global_train_step",
    "pmap_eval_and_accumulate",
    "pmap_eval_step",
    "pmap_train_step",
    "predict_step",
    "split_microbatches",
    "step_totals",
    "train_and_accumulate",
]
