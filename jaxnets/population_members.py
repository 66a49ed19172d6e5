"""A population's members as one `TrainState` whose every leaf has a leading member axis.

`jaxnets.population` trains such stacked states together; `unstack_member`
gives one member back as an ordinary state.

Example:
  >>> import jax.numpy as jnp, flax.linen as nn
  >>> from jaxnets.training import create_train_state
  >>> members = [create_train_state(nn.Dense(2), "sgd", jnp.zeros((1, 3)), seed=s) for s in (0, 1)]
  >>> unstack_member(stack_states(members), 1).params["kernel"].shape
  (3, 2)
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.errors import ConfigError
from jaxnets.training.state import TrainState


@jax.jit
def _stack(rows):
    return jax.tree.map(lambda *col: jnp.stack(col), *rows)


def stack_states(states: Sequence[TrainState]) -> TrainState:
    """Stacks members leaf by leaf (axis 0); static fields are the first member's.

    Args:
      states: the members' `TrainState` objects, all with the same leaf shapes
        and dtypes (same architecture and optimizer).

    Returns:
      One `TrainState` whose every leaf has a new leading member axis ``(N, ...)``.

    Raises:
      ConfigError: a member's leaf shapes or dtypes differ from member 0's.

    Example:
      >>> import jax.numpy as jnp, flax.linen as nn
      >>> from jaxnets.population_members import stack_states
      >>> from jaxnets.training import create_train_state
      >>> members = [create_train_state(nn.Dense(2), "sgd", jnp.zeros((1, 3)), seed=s)
      ...            for s in (0, 1, 2)]
      >>> stacked = stack_states(members)
      >>> stacked.params["kernel"].shape, stacked.step.shape
      ((3, 3, 2), (3,))
    """
    leaves0, treedef = jax.tree.flatten(states[0])
    spec = lambda leaves: [
        (np.shape(a), getattr(a, "dtype", None) or jnp.result_type(a)) for a in leaves
    ]
    spec0 = spec(leaves0)
    rows = [jax.tree.leaves(s) for s in states]
    for i, leaves in enumerate(rows):
        if spec(leaves) != spec0:
            raise ConfigError(
                f"population member {i} differs from member 0 in its parameter or optimizer "
                "shapes; members must share the architecture and the optimizer."
            )
    # One compiled stack instead of one dispatch per leaf: for small members the
    # per-leaf dispatches cost more than an epoch of training.
    return jax.tree.unflatten(treedef, _stack(rows))


def unstack_member(states: TrainState, i: int) -> TrainState:
    """Member ``i`` of stacked states, as an ordinary `TrainState`.

    Args:
      states: states stacked by `stack_states` (every leaf ``(N, ...)``).
      i: the member's index, ``0 <= i < N``.

    Returns:
      The `TrainState` of member ``i`` (each leaf indexed ``[i]``).

    Example:
      >>> import jax.numpy as jnp, flax.linen as nn
      >>> from jaxnets.population_members import stack_states, unstack_member
      >>> from jaxnets.training import create_train_state
      >>> members = [create_train_state(nn.Dense(2), "sgd", jnp.zeros((1, 3)), seed=s)
      ...            for s in (0, 1)]
      >>> second = unstack_member(stack_states(members), 1)
      >>> kernel = second.params["kernel"]
      >>> kernel.shape, bool((kernel == members[1].params["kernel"]).all())
      ((3, 2), True)
    """
    return jax.tree.map(lambda a: a[i], states)
