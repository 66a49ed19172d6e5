"""The compiled programs of a population: a fused epoch and an evaluation of every member.

Both take the members stacked by `jaxnets.population_members.stack_states` and
``vmap`` the single-model chunks of `jaxnets.training.fused` over the member
axis; `jaxnets.population.fit_population` runs them.

Example:
  >>> import jax, numpy as np, flax.linen as nn
  >>> from jaxnets.population_members import stack_states
  >>> from jaxnets.training import create_train_state
  >>> from jaxnets.training.fused import epoch_plan, zero_sums
  >>> data = {"x": np.ones((8, 3), np.float32), "y": np.zeros(8, np.int32)}
  >>> members = [create_train_state(nn.Dense(2), "sgd", data["x"][:1], seed=s) for s in (0, 1)]
  >>> plan = epoch_plan(8, 4, None, 0)
  >>> sums = jax.jit(population_eval)(stack_states(members), data, plan,
  ...                                 zero_sums(members[0], data, plan))
  >>> sums["loss"]["count"].tolist()
  [8.0, 8.0]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxnets import cpu_batched_dots
from jaxnets.training import fused


def population_epoch(states, active, data, index, valid, zeros):
    """One fused epoch of every member (``index`` ``(N, steps, B)``); stopped ones keep their state.

    Args:
      states: the members stacked by `stack_states`.
      active: ``(N,)`` bool; a member with False keeps its state unchanged.
      data: the dataset as a dict of arrays (``x``, ``y``, ...), shared by all members.
      index, valid: each member's row indices ``(N, steps, B)`` and the shared
        validity ``(steps, B)`` of `jaxnets.training.fused.epoch_plan`.
      zeros: metric sums of zeros for one member (`jaxnets.training.fused.zero_sums`).

    Returns:
      ``(states, sums)``: the new stacked states and each member's metric sums
      (leading axis N).

    Example:
      >>> import jax, numpy as np, flax.linen as nn
      >>> from jaxnets.population_members import stack_states
      >>> from jaxnets.population_programs import population_epoch
      >>> from jaxnets.training import create_train_state
      >>> from jaxnets.training.fused import epoch_plan, zero_sums
      >>> data = {"x": np.ones((32, 3), np.float32), "y": np.zeros(32, np.int32)}
      >>> members = [create_train_state(nn.Dense(2), "sgd", data["x"][:1], seed=s) for s in (0, 1)]
      >>> plan = epoch_plan(32, 16, None, 0)  # 2 steps of 16 rows
      >>> index = np.stack([plan["index"]] * 2)
      >>> active = np.array([True, False])  # member 1 has stopped
      >>> states, sums = jax.jit(population_epoch)(stack_states(members), active, data, index,
      ...                                          plan["valid"], zero_sums(members[0], data, plan))
      >>> states.step.tolist(), sums["loss"]["count"].tolist()
      ([2, 0], [32.0, 32.0])
    """

    def one(state, idx):
        return fused.train_chunk(state, zeros, data, {"index": idx, "valid": valid})

    new, sums = jax.vmap(one)(states, index)
    keep = lambda a, b: jnp.where(active.reshape(-1, *([1] * (a.ndim - 1))), a, b)
    return jax.tree.map(keep, new, states), sums


# On the CPU the members' weight gradients are batched products that XLA hands
# to Eigen's loop unless rewritten (`jaxnets.cpu_batched_dots`); one function
# object, so the engine compiles it once per signature.
_population_epoch_cpu = cpu_batched_dots.prefer_ynnpack(population_epoch)
# Its own docstring: the copied one would run `population_epoch`'s example twice.
_population_epoch_cpu.__doc__ = "`population_epoch` with its products rewritten for XLA:CPU."


def population_eval(states, data, plan, zeros):
    """The evaluation metric sums of every member on the same data.

    Jit it where it is called; it runs ``eval_step`` over every batch of ``plan``
    for each member, vmapped over the member axis.

    Args:
      states: the members stacked by `stack_states`.
      data: the dataset as a dict of arrays (``x``, ``y``, ...), shared by all members.
      plan: one `jaxnets.training.fused.epoch_plan` shared by all members: row
        indices ``index`` and validity ``valid``, both ``(steps, B)``.
      zeros: metric sums of zeros for one member (`jaxnets.training.fused.zero_sums`).

    Returns:
      Each member's metric sums (leading axis N), for `jaxnets.metrics.compute_members`.

    Example:
      >>> import jax, numpy as np, flax.linen as nn
      >>> from jaxnets import metrics
      >>> from jaxnets.population_members import stack_states
      >>> from jaxnets.population_programs import population_eval
      >>> from jaxnets.training import create_train_state
      >>> from jaxnets.training.fused import epoch_plan, zero_sums
      >>> data = {"x": np.ones((20, 3), np.float32), "y": np.arange(20, dtype=np.int32) % 2}
      >>> model = nn.Dense(2, kernel_init=nn.initializers.zeros)  # logits 0: p = 1/2 each
      >>> members = [create_train_state(model, "sgd", data["x"][:1], seed=s) for s in (0, 1)]
      >>> plan = epoch_plan(20, 8, None, 0)  # 3 batches, the last one padded
      >>> sums = jax.jit(population_eval)(stack_states(members), data, plan,
      ...                                 zero_sums(members[0], data, plan))
      >>> rows = metrics.compute_members(members[0].metric_table, sums)
      >>> [(round(r["loss"], 4), round(r["accuracy"], 4)) for r in rows]  # log 2; half are class 0
      [(0.6931, 0.5), (0.6931, 0.5)]
    """
    return jax.vmap(lambda s: fused.eval_chunk(s, zeros, data, plan))(states)
