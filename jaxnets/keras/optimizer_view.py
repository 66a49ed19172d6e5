"""``model.optimizer``: the Keras facade's view of the learning rate in the optimizer state.

Keras users read and set ``model.optimizer.learning_rate`` (callbacks do too).
The rate lives in the Optax state (`jaxnets.optim` injects it), so this view
reads and writes it there; before the model is built it keeps a rate set early
in `FacadeState.opt_state_unbuilt <jaxnets.keras.model.FacadeState>`, and
`with_rate_set_before_build` applies it to the first state.

Example:
  >>> import numpy as np
  >>> from jaxnets import layers
  >>> from jaxnets.keras import Sequential
  >>> model = Sequential([layers.Dense(2)])
  >>> model.compile(optimizer="sgd", loss="mse", learning_rate=0.01)
  >>> model.optimizer.learning_rate = 0.5  # before the model is built, as in Keras
  >>> _ = model.fit(np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32), verbose=0)
  >>> round(model.optimizer.learning_rate, 6)
  0.5
"""

from __future__ import annotations

from jaxnets import optim


def learning_rate_schedule(optimizer, optimizer_kwargs: dict):
    """The Optax schedule given as ``compile``'s learning rate (keyword or in an optimizer
    dict), or None for a number or an Optax transformation.

    Example:
      >>> import optax
      >>> schedule = optax.exponential_decay(0.1, 5, 0.5)
      >>> learning_rate_schedule("sgd", {"learning_rate": schedule}) is schedule
      True
      >>> learning_rate_schedule({"name": "adam", "learning_rate": 0.01}, {}) is None
      True
    """
    options = dict(optimizer_kwargs)
    if isinstance(optimizer, dict):
        options = {**optimizer, **(optimizer.get("config") or {}), **options}
    rate = options.get("learning_rate")
    return rate if callable(rate) else None


class OptimizerView:
    """``model.optimizer``: the learning rate held in the optimizer state, as in Keras.

    As in Keras it exists from ``compile`` on: before the model is built (no
    optimizer state yet) it reads the rate from a state of the compiled
    optimizer over no parameters (the hyperparameters do not depend on them),
    and a rate set then is applied when the state is made.
    """

    def __init__(self, model):
        self._model = model

    def _opt_state(self):
        if self._model.state is not None:
            return self._model.state.opt_state
        k = self._model._keras
        if k.opt_state_unbuilt is not None:
            return k.opt_state_unbuilt
        return k.compile_kwargs["tx"].init({})

    @property
    def learning_rate(self) -> float:
        """The rate of the next update (with a schedule, the schedule at the update count)."""
        opt_state = self._opt_state()
        schedule = self._model._keras.lr_schedule
        count = optim.schedule_count(opt_state) if schedule is not None else None
        if count is not None:
            # The stored value is the last update's rate; Keras reports the next one's.
            return float(schedule(count))
        return float(optim.get_hyperparam(opt_state, "learning_rate"))

    @learning_rate.setter
    def learning_rate(self, value):
        s, k = self._model.state, self._model._keras
        if s is None:
            k.opt_state_unbuilt = optim.set_hyperparam(self._opt_state(), "learning_rate", value)
            return
        self._model.state = s.replace(
            opt_state=optim.set_hyperparam(s.opt_state, "learning_rate", value)
        )

    lr = learning_rate


def with_rate_set_before_build(facade, state):
    """``state`` with the rate set through ``model.optimizer`` before the build, if any.

    Args:
      facade: the model's `FacadeState` (its ``opt_state_unbuilt`` is cleared).
      state: the freshly built `TrainState`.

    Example:
      >>> import types
      >>> facade = types.SimpleNamespace(opt_state_unbuilt=None)
      >>> with_rate_set_before_build(facade, "state")  # nothing was set: unchanged
      'state'
    """
    if facade.opt_state_unbuilt is None:
        return state
    lr = optim.get_hyperparam(facade.opt_state_unbuilt, "learning_rate")
    facade.opt_state_unbuilt = None
    return state.replace(opt_state=optim.set_hyperparam(state.opt_state, "learning_rate", lr))
