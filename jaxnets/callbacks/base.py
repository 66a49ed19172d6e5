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
    """Base class: override any hook; ``self.model`` and ``self.params`` are set by fit."""

    def __init__(self):
        self.model = None
        self.params: dict = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params: dict):
        self.params = params

    def on_train_begin(self, logs=None): ...
    def on_train_end(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_train_batch_begin(self, batch, logs=None): ...
    def on_train_batch_end(self, batch, logs=None): ...
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


_HOOKS = [name for name in vars(Callback) if name.startswith("on_")]


class CallbackList(Callback):
    """Calls each hook on every callback in order."""

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
    def hook(self, *args, **kwargs):
        for c in self.callbacks:
            getattr(c, name)(*args, **kwargs)

    hook.__name__ = name
    return hook


for _name in _HOOKS:
    setattr(CallbackList, _name, _dispatch(_name))
