"""Learning-rate callbacks: `ReduceLROnPlateau` and `LearningRateScheduler`.

Both change the learning rate held in the optimizer state
(`jaxnets.optim.set_hyperparam`, same dtype and shape), so the compiled step
is reused: no retrace, no recompile. They add ``learning_rate`` to the epoch
logs, as Keras does.

`ReduceLROnPlateau` follows Keras 3's rules
(``keras/src/callbacks/reduce_lr_on_plateau.py``): an improvement is
``current < best - min_delta`` (mode min; ``> best + min_delta`` for max);
in cooldown each epoch decrements the cooldown counter and resets ``wait``;
outside it a non-improving epoch increments ``wait``, and at
``wait >= patience`` the rate becomes ``max(lr * factor, min_lr)`` if it is
still above ``min_lr``, starting a cooldown. ``min_delta`` counts by its size
(Keras takes ``abs(min_delta)``), and mode 'auto' is `EarlyStopping`'s (Keras 3
shares it between the two): ``loss`` is minimised, a metric follows its
direction (precision, recall, AUC and accuracies up; errors down).

Example:
  >>> import jax.numpy as jnp
  >>> from jaxnets.training import create_train_state
  >>> from jaxnets.training.loop import FitContext
  >>> import flax.linen as nn
  >>> ctx = FitContext(create_train_state(nn.Dense(2), "adam", jnp.zeros((1, 3)), learning_rate=1.0))
  >>> cb = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=0.0)
  >>> cb.set_model(ctx)
  >>> cb.on_train_begin()
  >>> for epoch, v in enumerate([1.0, 1.0, 1.0, 0.5, 0.5]):
  ...     logs = {"loss": v}
  ...     cb.on_epoch_end(epoch, logs)
  ...     print(logs["learning_rate"], end=" ")
  1.0 1.0 0.5 0.25 0.25
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np

from jaxnets.callbacks.base import Callback
from jaxnets.callbacks.monitor import current_lr, get_lr, resolve_mode, set_lr
from jaxnets.errors import ConfigError


class ReduceLROnPlateau(Callback):
    """Multiplies the learning rate by ``factor`` when ``monitor`` plateaus.

    Args:
      monitor: the logged quantity to watch.
      factor: ``new_lr = lr * factor`` (must be < 1).
      patience: epochs without improvement before reducing.
      verbose: 1 prints each reduction.
      mode: ``'auto'``, ``'min'`` or ``'max'``.
      min_delta: threshold for a significant improvement.
      cooldown: epochs to wait after a reduction before counting again.
      min_lr: lower bound on the learning rate.

    Example:
      >>> import numpy as np
      >>> import jaxnets
      >>> from jaxnets import layers
      >>> from jaxnets.callbacks import ReduceLROnPlateau
      >>> # Zero targets and a zero kernel: the loss is 0 from the start and never improves.
      >>> model = jaxnets.Sequential([layers.Dense(1, kernel_initializer="zeros", input_shape=(2,))])
      >>> model.compile(optimizer="sgd", loss="mse", learning_rate=0.1)
      >>> x, y = np.ones((16, 2), np.float32), np.zeros((16, 1), np.float32)
      >>> cb = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1)
      >>> history = model.fit(x, y, epochs=3, verbose=0, callbacks=[cb])
      >>> [round(lr, 4) for lr in history.history["learning_rate"]]  # at each epoch's end
      [0.1, 0.1, 0.05]
      >>> round(model.optimizer.learning_rate, 4)  # halved after epochs 1 and 2
      0.025
    """

    def __init__(
        self,
        monitor="val_loss",
        factor=0.1,
        patience=10,
        verbose=0,
        mode="auto",
        min_delta=1e-4,
        cooldown=0,
        min_lr=0.0,
    ):
        super().__init__()
        if factor >= 1.0:
            raise ConfigError(f"ReduceLROnPlateau needs factor < 1.0, got factor={factor}.")
        self.monitor = monitor
        self.factor = factor
        self.min_lr = min_lr
        self.min_delta = abs(min_delta)
        self.patience = patience
        self.verbose = verbose
        self.cooldown = cooldown
        self.mode = mode
        self.minimize = resolve_mode(monitor, mode, "ReduceLROnPlateau") == "min"
        self._reset()

    def _reset(self):
        self.best = np.inf if self.minimize else -np.inf
        self.cooldown_counter = 0
        self.wait = 0

    def _improved(self, current) -> bool:
        if self.minimize:
            return current < self.best - self.min_delta
        return current > self.best + self.min_delta

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["learning_rate"] = current_lr(self.model)
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(
                f"ReduceLROnPlateau is conditioned on {self.monitor!r}, which is not logged; "
                f"available: {', '.join(logs)}.",
                stacklevel=2,
            )
            return
        current = float(current)
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(current):
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                old_lr = get_lr(self.model)
                if old_lr > np.float32(self.min_lr):
                    new_lr = max(old_lr * self.factor, self.min_lr)
                    set_lr(self.model, new_lr)
                    if self.verbose > 0:
                        print(
                            f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new_lr}."
                        )
                    self.cooldown_counter = self.cooldown
                    self.wait = 0

    def get_state(self) -> dict:
        return {
            "best": float(self.best),
            "wait": self.wait,
            "cooldown_counter": self.cooldown_counter,
        }

    def set_state(self, state: dict):
        self.best = float(state["best"])
        self.wait = int(state["wait"])
        self.cooldown_counter = int(state["cooldown_counter"])


class LearningRateScheduler(Callback):
    """Sets the learning rate at each epoch start to ``schedule(epoch, lr)``.

    ``schedule`` may also take the epoch alone (Keras's older form).

    Args:
      schedule: ``schedule(epoch, lr) -> lr`` (or ``schedule(epoch) -> lr``), called
        with the 0-based epoch and the current rate as a Python float; it must
        return a number, the new learning rate.
      verbose: 1 prints the rate set at each epoch start; 0 (default) is silent.

    Example:
      >>> sched = LearningRateScheduler(lambda epoch, lr: lr if epoch < 10 else lr * 0.9)
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise ConfigError("LearningRateScheduler needs a callable schedule(epoch, lr) -> lr.")
        self.schedule = schedule
        self.verbose = verbose
        params = inspect.signature(schedule).parameters.values()
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
        self._takes_lr = varargs or len(positional) >= 2

    def on_epoch_begin(self, epoch, logs=None):
        lr = get_lr(self.model)
        new_lr = self.schedule(epoch, lr) if self._takes_lr else self.schedule(epoch)
        if isinstance(new_lr, bool) or not isinstance(
            new_lr, int | float | np.floating | np.integer
        ):
            raise ConfigError(
                f"the schedule must return a number (the learning rate), got {type(new_lr).__name__}."
            )
        set_lr(self.model, float(new_lr))
        if self.verbose > 0:
            print(
                f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {float(new_lr)}."
            )

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = current_lr(self.model)
