"""Optimizers and learning-rate schedules by name, built from Optax pieces.

`make_optimizer` composes one Optax chain: optional clipping by global norm,
then the optimizer's scaling rule, decoupled weight decay, and the learning
rate. The learning rate and weight decay are wrapped in
``optax.inject_hyperparams`` so they live in the optimizer state: callbacks
read and change them (`get_hyperparam`, `set_hyperparam`, from
`jaxnets.optim_state` and re-exported here) without recompiling.
With a named schedule, the injected ``learning_rate`` is the schedule's peak and
the rate at each step is ``learning_rate * learning_rate_scale``, where
``learning_rate_scale`` is the schedule at peak 1 (also injected, recomputed at
every step): setting the learning rate rescales the whole schedule.

Example:
  >>> import jax.numpy as jnp
  >>> tx = make_optimizer("adam", learning_rate=1e-3, schedule="cosine", total_steps=100)
  >>> opt_state = tx.init({"w": jnp.zeros(3)})
  >>> float(get_hyperparam(opt_state, "learning_rate"))
  0.001
  >>> opt_state = set_hyperparam(opt_state, "weight_decay", 0.01)
  >>> round(float(get_hyperparam(opt_state, "weight_decay")), 6)
  0.01
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnets.compile import BoundedCache
from jaxnets.errors import ConfigError, lookup
from jaxnets.optim_state import (  # noqa: F401  (re-exported: jaxnets.optim.<name>)
    current_learning_rate,
    get_hyperparam,
    schedule_count,
    set_hyperparam,
)


def _scaling_rules() -> dict[str, Callable[..., optax.GradientTransformation]]:
    # Each rule is the optimizer without its learning rate; keyword defaults follow Keras.
    return {
        "sgd": lambda **kw: optax.identity(),
        "momentum": lambda momentum=0.9, **kw: optax.trace(decay=momentum, nesterov=False),
        "nesterov": lambda momentum=0.9, **kw: optax.trace(decay=momentum, nesterov=True),
        "adam": lambda b1=0.9, b2=0.999, eps=1e-7, **kw: optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
        "adamw": lambda b1=0.9, b2=0.999, eps=1e-7, **kw: optax.scale_by_adam(
            b1=b1, b2=b2, eps=eps
        ),
        "nadam": lambda b1=0.9, b2=0.999, eps=1e-7, **kw: optax.scale_by_adam(
            b1=b1, b2=b2, eps=eps, nesterov=True
        ),
        "rmsprop": lambda rho=0.9, eps=1e-7, **kw: optax.scale_by_rms(decay=rho, eps=eps),
        "adagrad": lambda initial_accumulator_value=0.1, eps=1e-7, **kw: optax.scale_by_rss(
            initial_accumulator_value=initial_accumulator_value, eps=eps
        ),
        "lion": lambda b1=0.9, b2=0.99, **kw: optax.scale_by_lion(b1=b1, b2=b2),
    }


_RULES = _scaling_rules()
# AdamW's decoupled decay defaults to Keras's 0.004; the others default to none.
_DEFAULT_DECAY = {"adamw": 0.004}


def optimizer_names() -> list[str]:
    """The optimizer names `make_optimizer` accepts, sorted.

    Returns:
      A sorted list of names.

    Example:
      >>> from jaxnets.optim import optimizer_names
      >>> "adam" in optimizer_names(), "lion" in optimizer_names(), "adamax" in optimizer_names()
      (True, True, False)
    """
    return sorted(_RULES)


SCHEDULES = ("constant", "step", "piecewise", "exponential", "cosine", "warmup_cosine", "one_cycle")


def make_schedule(
    name: str | None,
    learning_rate: float,
    *,
    total_steps: int | None = None,
    warmup_steps: int = 0,
    decay_rate: float = 0.1,
    boundaries: dict[int, float] | None = None,
    alpha: float = 0.0,
) -> optax.Schedule | float:
    """Returns a learning-rate schedule (a function of the step) by name.

    Args:
      name: ``"constant"`` (or None), ``"step"``/``"piecewise"`` (multiply by the
        scale at each boundary step; default: x0.1 at 50% and 75% of training),
        ``"exponential"`` (``decay_rate`` over ``total_steps``), ``"cosine"``,
        ``"warmup_cosine"`` (linear warm-up for ``warmup_steps`` then cosine),
        ``"one_cycle"``.
      learning_rate: the base (peak) learning rate.
      total_steps: number of training steps; needed by every schedule but constant.
      warmup_steps: ``"warmup_cosine"`` only: steps of the linear warm-up from 0;
        0 (default) means ``max(1, total_steps // 20)``.
      decay_rate: ``"exponential"`` only: the factor the rate is multiplied by
        over ``total_steps`` (``lr * decay_rate ** (step / total_steps)``).
      boundaries: ``"step"``/``"piecewise"`` only: ``{step: scale}``; from each
        boundary step on, the rate is multiplied by its scale (cumulatively);
        None gives the default above.
      alpha: ``"cosine"`` and ``"warmup_cosine"``: the final rate as a fraction
        of ``learning_rate`` (default 0: decay to zero).

    Returns:
      An Optax schedule ``step -> learning rate``, or ``learning_rate`` itself
      (a float) for ``"constant"``/None.

    Example:
      >>> s = make_schedule("step", 1.0, total_steps=100)
      >>> [float(s(0)), float(s(60)), float(s(80))]
      [1.0, 0.1, 0.01]
    """
    if name is not None:
        lookup(name, dict.fromkeys(SCHEDULES), kind="schedule")
    if name is None or name.lower() == "constant":  # names match in any case
        return learning_rate
    if not total_steps or total_steps <= 0:
        raise ConfigError(
            f"schedule {name!r} needs total_steps > 0 (got {total_steps!r}): pass "
            "total_steps=epochs * steps_per_epoch to make_optimizer or create_train_state."
        )
    name = name.lower()
    if name in ("step", "piecewise"):
        if boundaries is None:
            boundaries = {int(total_steps * 0.5): 0.1, int(total_steps * 0.75): 0.1}
        return optax.piecewise_constant_schedule(learning_rate, boundaries)
    if name == "exponential":
        return optax.exponential_decay(learning_rate, total_steps, decay_rate)
    if name == "cosine":
        return optax.cosine_decay_schedule(learning_rate, total_steps, alpha=alpha)
    if name == "warmup_cosine":
        warmup = warmup_steps or max(1, total_steps // 20)
        return optax.warmup_cosine_decay_schedule(
            0.0,
            learning_rate,
            warmup,
            max(total_steps, warmup + 1),
            end_value=alpha * learning_rate,
        )
    return optax.cosine_onecycle_schedule(total_steps, learning_rate)


def _check_positive(name: str, value, allow_zero: bool = False):
    """``value`` as a Python float (a schedule function as is), or a ConfigError.

    NumPy scalars and 0-d arrays are accepted and turned into floats:
    ``optax.inject_hyperparams`` only injects Python numbers and arrays, so a
    ``np.float32`` would otherwise become a constant the callbacks cannot change.
    """
    if callable(value):
        return value
    number = isinstance(value, (int, float, np.integer, np.floating)) or (
        isinstance(value, (np.ndarray, jax.Array))
        and value.ndim == 0
        and (jnp.issubdtype(value.dtype, jnp.integer) or jnp.issubdtype(value.dtype, jnp.floating))
    )
    if not number or math.isnan(value) or value < 0 or (value == 0 and not allow_zero):
        need = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be a number {need}, got {value!r}.")
    return float(value)


def make_optimizer(
    name: str = "adam",
    learning_rate: float = 1e-3,
    *,
    schedule: str | None = None,
    total_steps: int | None = None,
    weight_decay: float | None = None,
    clipnorm: float | None = None,
    schedule_kwargs: dict | None = None,
    **kwargs,
) -> optax.GradientTransformation:
    """Builds an optimizer by name as one Optax chain.

    Args:
      name: one of `optimizer_names()`: sgd, momentum, nesterov, adam, adamw,
        nadam, rmsprop, adagrad, lion.
      learning_rate: base learning rate (>= 0; a Python or NumPy number or a
        0-d array), or an Optax schedule (its rate cannot be set afterwards).
      schedule: optional schedule name for `make_schedule`; ``learning_rate``
        is then its peak, injected so that setting it rescales the schedule.
      total_steps: training length, for schedules.
      weight_decay: decoupled weight decay (AdamW-style), applied to every
        parameter; defaults to 0.004 for adamw and 0 otherwise.
      clipnorm: clip gradients by this global norm first.
      schedule_kwargs: extra arguments for `make_schedule`.
      **kwargs: the rule's own options, e.g. ``momentum``, ``b1``, ``eps``.

    Returns:
      An ``optax.GradientTransformation`` whose state holds the learning rate and
      weight decay as injected hyperparameters.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.optim import make_optimizer
      >>> tx = make_optimizer("sgd", learning_rate=0.1, clipnorm=1.0)
      >>> params = {"w": jnp.zeros(2)}
      >>> updates, _ = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(params), params)
      >>> [round(float(u), 4) for u in updates["w"]]  # clipped to norm 1, then times -0.1
      [-0.06, -0.08]
    """
    rule = lookup(name, _RULES, kind="optimizer")
    # Numbers first, so that np.float32(1e-3) is cached (and injected) as a float.
    # 0 is allowed, as in Keras: the weights stay put (e.g. to check a pipeline).
    learning_rate = _check_positive("learning_rate", learning_rate, allow_zero=True)
    if weight_decay is not None:
        weight_decay = _check_positive("weight_decay", weight_decay, allow_zero=True)
    if clipnorm is not None:
        clipnorm = _check_positive("clipnorm", clipnorm)
    key = _config_key(
        name, learning_rate, schedule, total_steps, weight_decay, clipnorm, schedule_kwargs, kwargs
    )
    if key is not None and key in _BUILT:
        return _BUILT[key]
    if weight_decay is None:
        weight_decay = _DEFAULT_DECAY.get(name.lower(), 0.0)
    hparams = {"learning_rate": learning_rate, "weight_decay": weight_decay}
    if schedule is not None:
        # The schedule at peak 1, times the injected peak: a schedule handed to
        # inject_hyperparams as the learning rate itself would be recomputed at
        # every step, overwriting whatever set_hyperparam wrote (per-member rates
        # of a population, ReduceLROnPlateau). cosine and exponential give the same
        # rates as before bit for bit; step, warmup_cosine and one_cycle round
        # differently, by at most 2 float32 ulps of the peak.
        unit = make_schedule(schedule, 1.0, total_steps=total_steps, **(schedule_kwargs or {}))
        if callable(unit) and callable(learning_rate):
            raise ConfigError(
                f"schedule={schedule!r} needs a number learning_rate (its peak), got a "
                "schedule function; pass one or the other."
            )
        if callable(unit):  # "constant" is 1.0: nothing to scale
            hparams["learning_rate_scale"] = unit

    def build(learning_rate, weight_decay, learning_rate_scale=None):
        if learning_rate_scale is not None:
            learning_rate = learning_rate * learning_rate_scale
        return optax.chain(
            rule(**kwargs),
            optax.add_decayed_weights(weight_decay),
            optax.scale_by_learning_rate(learning_rate),
        )

    tx = optax.inject_hyperparams(build)(**hparams)
    if clipnorm is not None:
        tx = optax.chain(optax.clip_by_global_norm(clipnorm), tx)
    return tx if key is None else _BUILT.put(key, tx)


# One optimizer object per configuration. A TrainState's optimizer is static
# (part of its pytree structure), so two states built from the same options
# must share it for `fit` and `fit_population` to reuse the compiled step
# instead of tracing and lowering it again for each new state.
_BUILT = BoundedCache(limit=64)


def _config_key(*options):
    """A hashable key for plain-valued options (names, numbers, None), else None."""

    def freeze(value):
        if isinstance(value, dict):
            return tuple(sorted((k, freeze(v)) for k, v in value.items()))
        if isinstance(value, (list, tuple)):
            return tuple(freeze(v) for v in value)
        if value is None or isinstance(value, (str, int, float, bool)):
            return (type(value).__name__, value)
        raise TypeError  # a schedule function or an array: build afresh

    try:
        return freeze(options)
    except TypeError:
        return None
