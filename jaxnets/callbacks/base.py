"""The `Callback` base class with Keras's hook names, and `CallbackList`.

Callbacks run on the host between compiled steps. They see
``self.model``: an object with a ``state`` attribute (the current
`jaxnets.training.TrainState`, which a callback may replace, e.g. to change the
learning rate held in the optimizer state) and a ``stop_training`` flag. In
``Model.fit`` that object is the `jaxnets.Model` itself.

Batch hooks receive logs only every ``log_every`` steps (and at epoch ends),
because fetching metrics every step would make the device wait.

Example:
  >>> class Count(Callback):
  ...     def on_epoch_end(self, epoch, logs=None):
  ...         print(epoch, sorted(logs))
  >>> CallbackList([Count()]).on_epoch_end(0, {"loss": 1.0})
  0 ['loss']
"""

from __future__ import annotations


class Callback:
    """Base class: override any hook; ``self.model`` and ``self.params`` are set by fit.

    Example:
      >>> import numpy as np
      >>> import jaxnets
      >>> from jaxnets import layers
      >>> from jaxnets.callbacks import Callback
      >>> class PrintStep(Callback):
      ...     def on_epoch_end(self, epoch, logs=None):
      ...         print(epoch, int(self.model.state.step), self.params["epochs"], sorted(logs))
      >>> model = jaxnets.Sequential([layers.Dense(1, input_shape=(2,))])
      >>> model.compile(optimizer="sgd", loss="mse")
      >>> x, y = np.ones((16, 2), np.float32), np.ones((16, 1), np.float32)
      >>> _ = model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[PrintStep()])
      0 2 2 ['loss', 'skipped']
      1 4 2 ['loss', 'skipped']
    """

    def __init__(self):
        self.model = None
        self.params: dict = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Keras calls on_batch_begin / on_batch_end (its older names) from the
        # train-batch hooks. A class that overrides only the old name gets its own
        # on_train_batch_* forwarding to it, so that the loop, which fetches batch
        # logs only for callbacks with their own on_train_batch_end, calls it.
        for old, new in _BATCH_ALIASES.items():
            if getattr(cls, old) is not getattr(Callback, old) and (
                getattr(cls, new) is getattr(Callback, new)
            ):
                setattr(cls, new, _forward_to(old, new))

    def set_model(self, model):
        self.model = model

    def set_params(self, params: dict):
        self.params = params

    def on_train_begin(self, logs=None): ...
    def on_train_end(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_batch_begin(self, batch, logs=None):
        """Keras's older name of `on_train_batch_begin`, which calls it."""

    def on_batch_end(self, batch, logs=None):
        """Keras's older name of `on_train_batch_end`, which calls it."""

    def on_train_batch_begin(self, batch, logs=None):
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch_end(batch, logs)

    def on_test_begin(self, logs=None): ...
    def on_test_end(self, logs=None): ...
    def on_test_batch_begin(self, batch, logs=None): ...
    def on_test_batch_end(self, batch, logs=None): ...
    def on_predict_begin(self, logs=None): ...
    def on_predict_end(self, logs=None): ...
    def on_predict_batch_begin(self, batch, logs=None): ...
    def on_predict_batch_end(self, batch, logs=None): ...

    # Checkpointing stores what a callback needs to resume exactly (counters,
    # best values); override both for stateful callbacks.
    def get_state(self) -> dict:
        return {}

    def set_state(self, state: dict):
        """Restores what `get_state` returned; a stateless callback has nothing to restore."""


_BATCH_ALIASES = {"on_batch_begin": "on_train_batch_begin", "on_batch_end": "on_train_batch_end"}


def _forward_to(old: str, new: str):
    def hook(self, batch, logs=None):
        getattr(self, old)(batch, logs)

    hook.__name__ = new
    return hook


_HOOKS = [name for name in vars(Callback) if name.startswith("on_")]


class CallbackList(Callback):
    """Calls each hook on every callback in order.

    Args:
      callbacks: the `Callback` objects, called in this order.
      model: passed to each callback's ``set_model`` (optional).
      params: passed to each callback's ``set_params`` (optional).

    Example:
      >>> from jaxnets.callbacks import CallbackList, History
      >>> first, second = History(), History()
      >>> cbs = CallbackList([first, second], params={"epochs": 1})
      >>> cbs.on_train_begin()
      >>> cbs.on_epoch_end(0, {"loss": 0.5})
      >>> first.history, second.history, second.params
      ({'loss': [0.5]}, {'loss': [0.5]}, {'epochs': 1})
    """

    def __init__(self, callbacks=(), model=None, params=None):
        super().__init__()
        self.callbacks = list(callbacks or [])
        if model is not None:
            self.set_model(model)
        if params is not None:
            self.set_params(params)

    def set_model(self, model):
        self.model = model
        for c in self.callbacks:
            c.set_model(model)

    def set_params(self, params):
        self.params = params
        for c in self.callbacks:
            c.set_params(params)

    def __iter__(self):
        return iter(self.callbacks)


def _dispatch(name):
    indexed = "epoch" in name or "batch" in name  # on_epoch_end(epoch, logs), ...

    def hook(self, *args, **kwargs):
        # Keras hands every hook a dict, never None (callbacks call logs.keys()); one
        # dict for all the callbacks, so what one adds (e.g. learning_rate) the next sees.
        n = 1 if indexed else 0
        if len(args) > n:
            args = (*args[:n], {} if args[n] is None else args[n], *args[n + 1 :])
        elif kwargs.get("logs", None) is None:
            kwargs.pop("logs", None)
            args = (*args, {})  # positional, as Keras passes it
        for c in self.callbacks:
            getattr(c, name)(*args, **kwargs)

    hook.__name__ = name
    return hook


for _name in _HOOKS:
    setattr(CallbackList, _name, _dispatch(_name))
