"""Logging callbacks: `CSVLogger` (one row per epoch) and `ProgBar` (progress display).

Both run on the host with numbers the loop already fetched: ``ProgBar``
updates every ``log_every`` steps and at epoch ends, never per step.

Example:
  >>> import os, tempfile
  >>> tmp = tempfile.TemporaryDirectory()
  >>> path = os.path.join(tmp.name, "log.csv")
  >>> logger = CSVLogger(path)
  >>> logger.on_train_begin()
  >>> logger.on_epoch_end(0, {"loss": 0.5, "accuracy": 0.75})
  >>> logger.on_train_end()
  >>> with open(path) as f:
  ...     print(f.read().strip())
  epoch,accuracy,loss,val_accuracy,val_loss
  0,0.75,0.5,NA,NA
  >>> tmp.cleanup()
"""

from __future__ import annotations

import csv
import os

import numpy as np

from jaxnets.callbacks.base import Callback
from jaxnets.training.progress import ProgressBar


def _cell(value):
    if isinstance(value, np.ndarray | list | tuple):
        return str(np.asarray(value).tolist())
    return value


class CSVLogger(Callback):
    """Streams each epoch's logs to a CSV file (Keras ``CSVLogger``).

    Args:
      filename: the CSV file.
      separator: the column separator.
      append: append to an existing file (no second header) instead of overwriting.

    Example:
      >>> import os, tempfile
      >>> import numpy as np
      >>> import jaxnets
      >>> from jaxnets import layers
      >>> from jaxnets.callbacks import CSVLogger
      >>> model = jaxnets.Sequential([layers.Dense(1, input_shape=(2,))])
      >>> model.compile(optimizer="sgd", loss="mse")
      >>> x, y = np.ones((16, 2), np.float32), np.ones((16, 1), np.float32)
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     path = os.path.join(tmp, "log.csv")
      ...     _ = model.fit(x, y, epochs=2, verbose=0, callbacks=[CSVLogger(path)])
      ...     with open(path) as f:
      ...         lines = f.read().splitlines()
      >>> lines[0], len(lines)  # the header (val_* columns as Keras writes), then one row per epoch
      ('epoch,loss,skipped,val_loss,val_skipped', 3)
    """

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename = os.fspath(filename)
        self.sep = separator
        self.append = append
        self.keys = None
        self._file = None
        self._writer = None

    def on_train_begin(self, logs=None):
        has_rows = (
            self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        )
        self._header_written = has_rows
        self._file = open(self.filename, "a" if self.append else "w", newline="")
        self._writer = None
        self.keys = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
            if self.keys and not any(k.startswith("val_") for k in self.keys):
                # Keras's columns: a run without validation still gets val_* columns
                # (filled with NA), so every CSV of a script has the same header.
                self.keys += [f"val_{k}" for k in self.keys]
        if self._writer is None:
            self._writer = csv.DictWriter(
                self._file, fieldnames=["epoch", *self.keys], delimiter=self.sep
            )
            if not self._header_written:
                self._writer.writeheader()
        row = {"epoch": epoch, **{k: _cell(logs.get(k, "NA")) for k in self.keys}}
        self._writer.writerow(row)
        self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
            self._file = None
            self._writer = None


class ProgBar(Callback):
    """Progress display (`jaxnets.training.progress.ProgressBar`) as a callback.

    ``verbose=1`` draws a bar per epoch, ``2`` prints one line per epoch.
    ``Model.fit`` adds one after the other callbacks, so it shows what they logged.
    Pass one yourself (and ``verbose=0`` to the fit) to send the display elsewhere,
    e.g. to a file.

    Args:
      verbose: 1 (or ``'auto'``) for a bar per epoch, 2 for one line per epoch.
      file: where to write (default: standard output).

    Example:
      >>> import io
      >>> import numpy as np, flax.linen as nn
      >>> from jaxnets.callbacks import ProgBar
      >>> from jaxnets.training import create_train_state, fit
      >>> x, y = np.ones((16, 2), np.float32), np.zeros(16, np.int32)
      >>> state = create_train_state(nn.Dense(2), "sgd", x[:1])
      >>> out = io.StringIO()
      >>> state, _ = fit(state, (x, y), epochs=2, verbose=0, callbacks=[ProgBar(2, file=out)])
      >>> [line.split(" - ")[0] for line in out.getvalue().splitlines()]
      ['Epoch 1/2', 'Epoch 2/2']
    """

    def __init__(self, verbose=1, file=None):
        super().__init__()
        self.verbose = verbose
        self.file = file
        self._bar = None

    def on_train_begin(self, logs=None):
        self._bar = ProgressBar(
            self.verbose, self.params.get("epochs", 1), self.params.get("steps", 0), file=self.file
        )

    def on_epoch_begin(self, epoch, logs=None):
        self._bar.epoch_begin(epoch)

    def on_train_batch_end(self, batch, logs=None):
        self._bar.update(batch + 1, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._bar.epoch_end(epoch, logs or {})
