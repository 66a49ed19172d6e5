"""Reading and writing the hyperparameters injected into an optimizer state.

`jaxnets.optim.make_optimizer` wraps the learning rate and weight decay in
``optax.inject_hyperparams``, so they live in the optimizer state rather than
in the compiled step. The functions here find those injected states (through
chains, ``optax.partition`` groups and masked states) and read or replace a
value without recompiling: callbacks change the learning rate this way.
`jaxnets.optim` re-exports these names.

Example:
  >>> import jax.numpy as jnp
  >>> from jaxnets.optim import make_optimizer
  >>> opt_state = make_optimizer("sgd", learning_rate=0.1).init({"w": jnp.zeros(2)})
  >>> float(get_hyperparam(set_hyperparam(opt_state, "learning_rate", 0.5)))
  0.5
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxnets.errors import ConfigError


def _injected_states(opt_state):
    """Yields every injected-hyperparameter state inside an optimizer state."""
    if hasattr(opt_state, "hyperparams") and isinstance(opt_state.hyperparams, dict):
        yield opt_state
    if isinstance(opt_state, tuple):
        for child in opt_state:
            yield from _injected_states(child)
    elif isinstance(opt_state, dict):  # e.g. optax.partition's per-group states
        for child in opt_state.values():
            yield from _injected_states(child)
    elif hasattr(opt_state, "inner_state"):  # masked and wrapped states
        yield from _injected_states(opt_state.inner_state)


def get_hyperparam(opt_state, name: str = "learning_rate"):
    """Reads an injected hyperparameter (e.g. the learning rate) from an optimizer state.

    Args:
      opt_state: an optimizer state, e.g. ``TrainState.opt_state``; nested
        states (chains, ``optax.partition`` groups, masked states) are searched.
      name: the hyperparameter, ``"learning_rate"`` (default) or ``"weight_decay"``.

    Returns:
      The stored value (a scalar JAX array) of the first injected state holding
      ``name``; with several groups (`masked_optimizer`), the first group's.
      With a named schedule, ``learning_rate`` is the schedule's peak; the rate
      of the last step is that times ``get_hyperparam(opt_state, "learning_rate_scale")``.

    Raises:
      jaxnets.errors.ConfigError: if the optimizer was not built with it
        injected (see `make_optimizer`).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.optim import get_hyperparam, make_optimizer
      >>> opt_state = make_optimizer("adamw", learning_rate=0.01).init({"w": jnp.zeros(2)})
      >>> round(float(get_hyperparam(opt_state)), 6)
      0.01
      >>> round(float(get_hyperparam(opt_state, "weight_decay")), 6)  # adamw's default
      0.004
    """
    for s in _injected_states(opt_state):
        if name in s.hyperparams:
            return s.hyperparams[name]
    raise ConfigError(
        f"the optimizer state holds no injected hyperparameter {name!r}; build the optimizer "
        "with jaxnets.optim.make_optimizer or wrap it in optax.inject_hyperparams."
    )


def schedule_count(opt_state, name: str = "learning_rate") -> int | None:
    """How many updates the schedule computing ``name`` has made, or None if ``name`` is a number.

    A learning rate given as an Optax schedule is recomputed at every update
    from this count: the stored value is the rate of the last update, and the
    next update uses ``schedule(schedule_count(opt_state))`` (what Keras reports
    as ``optimizer.learning_rate``).

    Args:
      opt_state: an optimizer state built by `make_optimizer` (or holding
        ``optax.inject_hyperparams`` states).
      name: the hyperparameter, ``"learning_rate"`` (default).

    Returns:
      The count as an int, or None where ``name`` is injected as a number.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from jaxnets.optim import make_optimizer
      >>> schedule = optax.exponential_decay(0.1, transition_steps=1, decay_rate=0.5)
      >>> tx = make_optimizer("sgd", learning_rate=schedule)
      >>> params = {"w": jnp.zeros(2)}
      >>> opt_state = tx.init(params)
      >>> for _ in range(2):
      ...     _, opt_state = tx.update({"w": jnp.ones(2)}, opt_state, params)
      >>> n = schedule_count(opt_state)
      >>> n, round(float(get_hyperparam(opt_state)), 4), round(float(schedule(n)), 4)
      (2, 0.05, 0.025)
      >>> schedule_count(make_optimizer("sgd", learning_rate=0.1).init(params)) is None
      True
    """
    for s in _injected_states(opt_state):
        scheduled = getattr(s, "hyperparams_states", None) or {}
        if name in scheduled:
            return int(np.max(np.asarray(scheduled[name].count)))
        if name in s.hyperparams:
            return None
    return None


def current_learning_rate(opt_state):
    """The learning rate of the last step: the peak times the schedule's factor, if any.

    `get_hyperparam` gives the injected ``learning_rate``, which with a named
    schedule is the peak; logs and TensorBoard show this instead.

    Args:
      opt_state: an optimizer state built by `make_optimizer`.

    Returns:
      A scalar JAX array.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.optim import make_optimizer
      >>> tx = make_optimizer("sgd", learning_rate=0.1, schedule="step", total_steps=4,
      ...                     schedule_kwargs={"boundaries": {1: 0.5}})
      >>> params = {"w": jnp.zeros(2)}
      >>> opt_state = tx.init(params)
      >>> for _ in range(2):
      ...     _, opt_state = tx.update({"w": jnp.ones(2)}, opt_state, params)
      >>> round(float(get_hyperparam(opt_state)), 4), round(float(current_learning_rate(opt_state)), 4)
      (0.1, 0.05)
    """
    lr = get_hyperparam(opt_state, "learning_rate")
    try:
        return lr * get_hyperparam(opt_state, "learning_rate_scale")
    except ConfigError:
        return lr  # no schedule: the injected rate is the rate


def set_hyperparam(opt_state, name: str, value):
    """Returns a copy of ``opt_state`` with an injected hyperparameter replaced.

    The value keeps the stored dtype and shape, so a jitted step does not retrace.

    With a named schedule (``make_optimizer(..., schedule="cosine")``) the
    ``learning_rate`` is the schedule's peak: setting it rescales the whole
    schedule, which goes on from the current step (``ReduceLROnPlateau`` with
    ``factor=0.5`` halves the peak and so every later scheduled rate;
    `jaxnets.callbacks.LearningRateScheduler` sets the peak, not the rate of
    the step). The scheduled factor itself, ``learning_rate_scale``, and any
    hyperparameter an ``optax.inject_hyperparams`` schedule computes cannot be
    set: the next step would overwrite it.

    Args:
      opt_state: an optimizer state built by `make_optimizer` (or holding
        ``optax.inject_hyperparams`` states); it is not modified.
      name: the hyperparameter, e.g. ``"learning_rate"`` or ``"weight_decay"``.
      value: the new value, a number or array, cast to the stored dtype; every
        injected state holding ``name`` gets it (all groups of a `masked_optimizer`).

    Returns:
      The new optimizer state, of the same structure.

    Raises:
      jaxnets.errors.ConfigError: no injected state holds ``name``, or a
        schedule computes it at every step.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.optim import get_hyperparam, make_optimizer, set_hyperparam
      >>> tx = make_optimizer("sgd", learning_rate=0.1)
      >>> params = {"w": jnp.zeros(2)}
      >>> opt_state = set_hyperparam(tx.init(params), "learning_rate", 0.5)
      >>> float(get_hyperparam(opt_state)), get_hyperparam(opt_state).dtype
      (0.5, dtype('float32'))
      >>> updates, _ = tx.update({"w": jnp.ones(2)}, opt_state, params)
      >>> updates["w"].tolist()
      [-0.5, -0.5]
      >>> # A step schedule (x0.1 from step 2 of 4): setting the rate sets its peak.
      >>> tx = make_optimizer("sgd", learning_rate=0.1, schedule="step", total_steps=4,
      ...                     schedule_kwargs={"boundaries": {2: 0.1}})
      >>> opt_state = set_hyperparam(tx.init(params), "learning_rate", 0.5)
      >>> for step in range(3):
      ...     updates, opt_state = tx.update({"w": jnp.ones(2)}, opt_state, params)
      ...     print(round(float(updates["w"][0]), 6), end=" ")
      -0.5 -0.5 -0.05
    """
    found = False

    def replace(s):
        nonlocal found
        if hasattr(s, "hyperparams") and isinstance(s.hyperparams, dict) and name in s.hyperparams:
            if name in (getattr(s, "hyperparams_states", None) or {}):
                # inject_hyperparams recomputes it from its schedule at every step.
                raise ConfigError(
                    f"{name!r} is computed by a schedule at every step, so a value set "
                    "now would be overwritten; set a number instead (with "
                    "make_optimizer(schedule=...), set 'learning_rate', the peak)."
                )
            found = True
            old = s.hyperparams[name]
            hp = dict(s.hyperparams)
            # A buffer of its own per group: the training step donates each one.
            hp[name] = jnp.array(value, dtype=jnp.asarray(old).dtype, copy=True)
            return s._replace(hyperparams=hp)
        if isinstance(s, tuple) and not hasattr(s, "_fields"):
            return tuple(replace(c) for c in s)
        if isinstance(s, tuple):  # other NamedTuples: recurse into fields
            return s._replace(**{f: replace(getattr(s, f)) for f in s._fields})
        if isinstance(s, dict):  # per-group states (optax.partition)
            return type(s)({k: replace(v) for k, v in s.items()})
        return s

    new = replace(opt_state)
    if not found:
        get_hyperparam(opt_state, name)  # raises the explanatory error
    return new
