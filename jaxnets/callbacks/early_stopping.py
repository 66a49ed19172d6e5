"""`EarlyStopping`: stop when a monitored quantity stops improving (Keras rules).

The rules are Keras 3's (``keras/src/callbacks/early_stopping.py``), step for
step, so the same sequence of monitored values stops at the same epoch:

* an improvement is ``current - min_delta < best`` (mode min) or
  ``current - min_delta > best`` (max), with ``min_delta`` taken as ``|min_delta|``
  pointing in the good direction; ``best`` starts at +-inf;
* each monitored epoch (from ``start_from_epoch`` on) first increments ``wait``;
  an improvement records ``best`` and resets ``wait`` only if it also improves on
  ``baseline`` (when given), and never stops training that epoch;
* otherwise training stops once ``wait >= patience`` (and ``epoch > 0``);
* ``restore_best_weights`` puts back the variables of the best epoch when
  training ends (the first monitored epoch's if none improved).

Example:
  >>> class FakeModel:
  ...     stop_training = False
  >>> es = EarlyStopping(monitor="val_loss", patience=1)
  >>> es.set_model(FakeModel())
  >>> es.on_train_begin()
  >>> for epoch, v in enumerate([1.0, 0.9, 0.95, 0.92]):
  ...     es.on_epoch_end(epoch, {"val_loss": v})
  ...     if es.model.stop_training:
  ...         break
  >>> es.stopped_epoch
  2
"""

from __future__ import annotations

import warnings

from jaxnets.callbacks.base import Callback
from jaxnets.callbacks.monitor import resolve_mode, restore, snapshot


class EarlyStopping(Callback):
    """Stops training when ``monitor`` has not improved for ``patience`` epochs.

    Args:
      monitor: the logged quantity, e.g. ``'val_loss'`` or ``'val_accuracy'``.
      min_delta: the smallest change that counts as an improvement.
      patience: epochs without improvement before stopping.
      verbose: 1 prints when it stops and restores.
      mode: ``'auto'``, ``'min'`` or ``'max'``.
      baseline: training stops if the model does not beat this within ``patience``.
      restore_best_weights: restore the best epoch's variables at the end.
      start_from_epoch: epochs of warm-up before monitoring begins.

    Example:
      >>> import numpy as np
      >>> import jaxnets
      >>> from jaxnets import layers
      >>> from jaxnets.callbacks import EarlyStopping
      >>> # Zero targets and a zero kernel: the loss is 0 from the start and never improves.
      >>> model = jaxnets.Sequential([layers.Dense(1, kernel_initializer="zeros", input_shape=(2,))])
      >>> model.compile(optimizer="sgd", loss="mse")
      >>> x, y = np.ones((16, 2), np.float32), np.zeros((16, 1), np.float32)
      >>> es = EarlyStopping(monitor="loss", patience=2)
      >>> history = model.fit(x, y, epochs=5, verbose=0, callbacks=[es])
      >>> es.stopped_epoch, history.epoch  # epoch 0 sets the best; 1 and 2 wait
      (2, [0, 1, 2])
    """

    def __init__(
        self,
        monitor="val_loss",
        min_delta=0,
        patience=0,
        verbose=0,
        mode="auto",
        baseline=None,
        restore_best_weights=False,
        start_from_epoch=0,
    ):
        super().__init__()
        self.monitor = monitor
        self.patience = patience
        self.verbose = verbose
        self.baseline = baseline
        self.min_delta = abs(min_delta)
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        self.mode = resolve_mode(monitor, mode, "EarlyStopping")
        self.best = self._initial_best()
        self.wait = 0
        self.stopped_epoch = 0
        self.best_epoch = 0
        self.best_weights = None

    def _is_improvement(self, value, reference) -> bool:
        if self.mode == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def _initial_best(self) -> float:
        return float("inf") if self.mode == "min" else -float("inf")

    def on_train_begin(self, logs=None):
        # As in Keras 3, each fit starts afresh, so one callback object can serve
        # several fits (folds, fine-tuning stages). A resumed fit gets its saved
        # state back after this (`set_state`).
        self.best = self._initial_best()
        self.wait = 0
        self.stopped_epoch = 0
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None:
            warnings.warn(
                f"EarlyStopping is conditioned on {self.monitor!r}, which is not logged; "
                f"available: {', '.join(logs or {})}.",
                stacklevel=2,
            )
            return
        if epoch < self.start_from_epoch:
            return
        current = float(current)
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = snapshot(self.model.state)
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = snapshot(self.model.state)
            # Only restart the wait if the baseline is beaten too.
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(
                    f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}."
                )
            restore(self.model, self.best_weights)

    def get_state(self) -> dict:
        state = {
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
            "best": self.best,
            "best_epoch": self.best_epoch,
        }
        if self.best_weights is not None:  # a resumed run must end on the same weights
            state["best_weights"] = list(self.best_weights)
        return state

    def set_state(self, state: dict):
        self.wait = int(state["wait"])
        self.stopped_epoch = int(state["stopped_epoch"])
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        if "best_weights" in state:
            # Host arrays from the checkpoint; `restore` places them like the model's.
            self.best_weights = tuple(state["best_weights"])
