"""`ModelCheckpoint`: save the model (or its weights) during training, via Orbax.

Follows Keras 3: ``filepath`` may hold placeholders filled from the epoch
(1-based) and the logs (``'ckpt/{epoch:02d}-{val_loss:.2f}'``); with
``save_best_only`` a save happens only when ``monitor`` improves on the best
value so far (``initial_value_threshold`` to start from), comparing with
``<`` (mode min) or ``>`` (max). Under ``Model.fit`` it calls ``model.save``
or ``model.save_weights`` (directories: architecture JSON plus Orbax arrays);
under the functional `jaxnets.training.fit` it saves the state's arrays.

Example:
  >>> cb = ModelCheckpoint("ckpt/epoch{epoch:02d}", save_best_only=True, monitor="val_accuracy")
  >>> cb.mode
  'max'
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from jaxnets.callbacks.base import Callback
from jaxnets.callbacks.monitor import resolve_mode
from jaxnets.errors import ConfigError


class ModelCheckpoint(Callback):
    """Saves the model every epoch (or every ``save_freq`` steps), or only the best one.

    Args:
      filepath: a directory path, optionally with ``{epoch}`` / log placeholders.
      monitor: the logged quantity for ``save_best_only``.
      verbose: 1 prints each decision.
      save_best_only: save only when ``monitor`` improves.
      save_weights_only: save the variables only (``model.save_weights``).
      mode: ``'auto'``, ``'min'`` or ``'max'``.
      save_freq: ``'epoch'`` or a number of steps (checked at the loop's logging points).
      initial_value_threshold: the best value to beat at the start.

    Example:
      >>> import os, tempfile
      >>> import numpy as np
      >>> import jaxnets
      >>> from jaxnets import layers
      >>> from jaxnets.callbacks import ModelCheckpoint
      >>> model = jaxnets.Sequential([layers.Dense(1, input_shape=(2,))])
      >>> model.compile(optimizer="sgd", loss="mse")
      >>> x, y = np.ones((16, 2), np.float32), np.ones((16, 1), np.float32)
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     cb = ModelCheckpoint(os.path.join(tmp, "epoch{epoch}"))
      ...     _ = model.fit(x, y, epochs=2, verbose=0, callbacks=[cb])
      ...     print(sorted(os.listdir(tmp)), sorted(os.listdir(os.path.join(tmp, "epoch2"))))
      ['epoch1', 'epoch2'] ['model.json', 'train_state', 'variables']
    """

    def __init__(
        self,
        filepath,
        monitor="val_loss",
        verbose=0,
        save_best_only=False,
        save_weights_only=False,
        mode="auto",
        save_freq="epoch",
        initial_value_threshold=None,
    ):
        super().__init__()
        if save_freq != "epoch" and not (isinstance(save_freq, int) and save_freq > 0):
            raise ConfigError(f"save_freq must be 'epoch' or a positive int, got {save_freq!r}.")
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        self.save_freq = save_freq
        if mode not in ("auto", "min", "max"):  # checked even when no monitor is compared
            raise ConfigError(f"ModelCheckpoint mode must be 'auto', 'min' or 'max', got {mode!r}.")
        self.mode = resolve_mode(monitor, mode, "ModelCheckpoint") if save_best_only else mode
        if initial_value_threshold is not None:
            self.best = float(initial_value_threshold)
        else:
            self.best = np.inf if self.mode == "min" else -np.inf
        self._current_epoch = 0
        self._batches_since_save = 0
        self._steps_seen = 0  # steps of the current epoch already counted
        self._resumed_epoch = None  # set_state's epoch: its step count carries on

    def _is_improvement(self, current) -> bool:
        return current < self.best if self.mode == "min" else current > self.best

    def on_epoch_begin(self, epoch, logs=None):
        # A run resumed mid-epoch begins that epoch again at a later step: the
        # steps counted before the checkpoint stay counted.
        if epoch != self._resumed_epoch:
            self._steps_seen = 0
        self._resumed_epoch = None
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch":
            return
        # Batch hooks run every log_every steps and at the epoch's last step: count
        # the steps in between (batch is the 0-based index of the last one done).
        self._batches_since_save += batch + 1 - self._steps_seen
        self._steps_seen = batch + 1
        if self._batches_since_save >= self.save_freq:
            self._batches_since_save = 0
            self._save(self._current_epoch, batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, None, logs)

    def _should_save(self, epoch, logs, path) -> bool:
        if not self.save_best_only:
            return True
        current = (logs or {}).get(self.monitor)
        if current is None:
            warnings.warn(f"Can save best model only with {self.monitor} available.", stacklevel=3)
            return True
        if np.ndim(current):  # a per-class metric: Keras saves, as without save_best_only
            warnings.warn(
                f"Can save best model only when `monitor` is a scalar value. Received: "
                f"{self.monitor}={current}. Falling back to `save_best_only=False`.",
                stacklevel=3,
            )
            return True
        current = float(current)
        if self._is_improvement(current):
            if self.verbose > 0:
                print(
                    f"\nEpoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to "
                    f"{current:.5f}, saving model to {path}"
                )
            self.best = current
            return True
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")
        return False

    def _save(self, epoch, batch, logs):
        fields = dict(logs or {})
        if batch is not None and "batch" not in fields:
            fields["batch"] = batch + 1
        try:
            path = self.filepath.format(epoch=epoch + 1, **fields)
        except KeyError as e:
            raise ConfigError(
                f"cannot fill the ModelCheckpoint filepath {self.filepath!r}: no logged value {e}."
            ) from e
        if not self._should_save(epoch, logs, path):
            return
        from jaxnets.keras import saving  # the facade imports the callbacks, not the reverse

        if self.save_weights_only:
            if hasattr(self.model, "save_weights"):
                self.model.save_weights(path, overwrite=True)
            else:
                saving.save_state(self.model.state, path, weights_only=True)
        elif hasattr(self.model, "save"):
            self.model.save(path, overwrite=True)
        else:
            saving.save_state(self.model.state, path, weights_only=False)

    def get_state(self) -> dict:
        if self.save_freq == "epoch":
            return {"best": float(self.best)}
        # The step counts too: a resumed run saves at the steps an uninterrupted one would.
        return {
            "best": float(self.best),
            "batches_since_save": self._batches_since_save,
            "epoch": self._current_epoch,
            "steps_seen": self._steps_seen,
        }

    def set_state(self, state: dict):
        self.best = float(state["best"])
        self._batches_since_save = int(state.get("batches_since_save", 0))
        if "epoch" in state:  # saved with save_freq=<steps>
            self._current_epoch = self._resumed_epoch = int(state["epoch"])
            self._steps_seen = int(state["steps_seen"])
