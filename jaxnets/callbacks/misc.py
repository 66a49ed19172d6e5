"""`History`, `TerminateOnNaN` and `LambdaCallback`.

Example:
  >>> history = History()
  >>> history.on_train_begin()
  >>> history.on_epoch_end(0, {"loss": 0.9})
  >>> history.on_epoch_end(1, {"loss": 0.7})
  >>> history.epoch, history.history
  ([0, 1], {'loss': [0.9, 0.7]})
"""

from __future__ import annotations

import math

import numpy as np

from jaxnets.callbacks.base import Callback
from jaxnets.errors import ConfigError


class History(Callback):
    """Records every epoch's logs (what ``Model.fit`` returns).

    Attributes:
      history: ``{name: [value per epoch]}``.
      epoch: the epoch indices recorded.
      params: the fit parameters (``epochs``, ``steps``, ``verbose``).

    Example:
      >>> import numpy as np
      >>> import jaxnets
      >>> from jaxnets import layers
      >>> model = jaxnets.Sequential([layers.Dense(1, input_shape=(2,))])
      >>> model.compile(optimizer="sgd", loss="mse")
      >>> x, y = np.ones((16, 2), np.float32), np.ones((16, 1), np.float32)
      >>> history = model.fit(x, y, batch_size=8, epochs=3, verbose=0)
      >>> history.epoch, len(history.history["loss"]), history.params["steps"]
      ([0, 1, 2], 3, 2)
      >>> model.history is history
      True
    """

    def __init__(self):
        super().__init__()
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)
        if self.model is not None and hasattr(type(self.model), "history"):
            self.model.history = self

    def get_state(self) -> dict:
        def plain(v):
            return np.asarray(v).tolist() if isinstance(v, np.ndarray) else v

        return {
            "epoch": list(self.epoch),
            "history": {k: [plain(v) for v in vs] for k, vs in self.history.items()},
        }

    def set_state(self, state: dict):
        self.epoch = list(state["epoch"])
        self.history = {k: list(v) for k, v in state["history"].items()}


def _not_finite(value) -> bool:
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


class TerminateOnNaN(Callback):
    """Stops training when the logged loss becomes NaN or infinite.

    The training step never applies a non-finite update (it keeps the state
    bitwise and counts it in ``state.skipped``), so the model keeps the last
    good parameters. The loss is checked whenever the loop logs: every
    ``log_every`` steps and at each epoch's last step (and end).

    Args:
      raise_error: raise a ``RuntimeError`` (as Keras does) instead of printing
        a message and stopping the training.

    Example:
      >>> import numpy as np
      >>> import jaxnets
      >>> from jaxnets import layers
      >>> from jaxnets.callbacks import TerminateOnNaN
      >>> model = jaxnets.Sequential([layers.Dense(1, input_shape=(2,))])
      >>> model.compile(optimizer="sgd", loss="mse")
      >>> x, y = np.ones((16, 2), np.float32), np.ones((16, 1), np.float32)
      >>> x[0, 0] = np.nan  # one of the two batches of 8 rows gets a NaN loss
      >>> history = model.fit(x, y, batch_size=8, epochs=3, verbose=0,
      ...                     callbacks=[TerminateOnNaN()], allow_nonfinite=True)
      Batch 1: invalid loss, terminating training
      >>> history.epoch, int(model.state.step), int(model.state.skipped)
      ([0], 2, 1)
    """

    def __init__(self, raise_error: bool = False):
        super().__init__()
        self.raise_error = raise_error

    def _check(self, where: str, logs):
        if getattr(self.model, "stop_training", False):
            return  # already stopping (the epoch's last batch and its end share one loss)
        loss = (logs or {}).get("loss")
        if loss is None or not _not_finite(loss):
            return
        if self.raise_error:
            # Keras's error (a RuntimeError), so `except RuntimeError` ports as is.
            raise RuntimeError(
                f"NaN or Inf loss encountered at {where.lower()}. Loss value: {loss}. "
                "Terminating training immediately."
            )
        print(f"{where}: invalid loss, terminating training")
        self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        self._check(f"Batch {batch}", logs)

    def on_epoch_end(self, epoch, logs=None):
        self._check(f"Epoch {epoch + 1}", logs)


_HOOKS = sorted(n for n in vars(Callback) if n.startswith("on_"))
_INDEXED = {name for name in _HOOKS if "batch" in name or "epoch" in name}
_ALIASES = {"on_batch_begin": "on_train_batch_begin", "on_batch_end": "on_train_batch_end"}


class LambdaCallback(Callback):
    """A callback made of functions (Keras ``LambdaCallback``).

    Epoch and batch hooks are called as ``fn(index, logs)``, the others as
    ``fn(logs)``; ``logs`` is always a dict.

    Example:
      >>> cb = LambdaCallback(on_epoch_end=lambda epoch, logs: print(epoch, logs))
      >>> cb.on_epoch_end(3)
      3 {}
    """

    def __init__(self, **hooks):
        super().__init__()
        for name, fn in hooks.items():
            hook = _ALIASES.get(name, name)
            if hook not in _HOOKS:
                raise ConfigError(
                    f"LambdaCallback has no hook {name!r}; valid hooks: {', '.join(sorted(_HOOKS))}."
                )
            if fn is None:
                continue
            if not callable(fn):
                raise ConfigError(f"LambdaCallback {name} must be callable, got {fn!r}.")
            setattr(self, hook, self._wrap(fn, hook in _INDEXED))

    @staticmethod
    def _wrap(fn, indexed: bool):
        if indexed:
            return lambda index, logs=None: fn(index, logs if logs is not None else {})
        return lambda logs=None: fn(logs if logs is not None else {})
