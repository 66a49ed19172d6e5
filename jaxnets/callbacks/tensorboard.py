"""`TensorBoard`: epoch scalars, the learning rate and weight histograms as event files.

Files are written with TensorBoard's own writer
(``tensorboard.summary.writer.event_file_writer``) and protobufs, no
TensorFlow needed, in Keras's layout: ``<log_dir>/train`` gets ``epoch_loss``,
``epoch_<metric>``, ``epoch_learning_rate`` and, every ``histogram_freq``
epochs, one histogram per parameter (tag ``params/<path>``);
``<log_dir>/validation`` gets the ``val_`` values under the same tags. Read
them back with ``tensorboard --logdir <log_dir>`` or TensorBoard's
``EventAccumulator``.

Example:
  >>> import tempfile
  >>> from jaxnets.training.loop import FitContext
  >>> tmp = tempfile.TemporaryDirectory()
  >>> tb = TensorBoard(tmp.name)
  >>> tb.set_model(FitContext(None))
  >>> tb.on_train_begin()
  >>> tb.on_epoch_end(0, {"loss": 0.5, "val_loss": 0.6})
  >>> tb.on_train_end()
  >>> tmp.cleanup()
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from jaxnets import optim
from jaxnets.callbacks.base import Callback
from jaxnets.errors import ConfigError


def _tensorboard():
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError as e:  # an optional dependency
        raise ConfigError(
            "the TensorBoard callback needs the tensorboard package: pip install 'jaxnets[tensorboard]'."
        ) from e
    return EventFileWriter, event_pb2, summary_pb2


def histogram_proto(values: np.ndarray, bins: int = 30):
    """A ``HistogramProto`` of ``values`` (min, max, sums and ``bins`` buckets)."""
    _, _, summary_pb2 = _tensorboard()
    v = np.asarray(values, np.float64).ravel()
    counts, edges = np.histogram(v, bins=bins if v.size and v.min() < v.max() else 1)
    return summary_pb2.HistogramProto(
        min=float(v.min()),
        max=float(v.max()),
        num=float(v.size),
        sum=float(v.sum()),
        sum_squares=float(np.square(v).sum()),
        bucket_limit=[float(e) for e in edges[1:]],
        bucket=[float(c) for c in counts],
    )


class TensorBoard(Callback):
    """Writes TensorBoard event files (Keras ``TensorBoard``).

    Args:
      log_dir: the directory for ``train/`` and ``validation/`` event files.
      histogram_freq: write parameter histograms every this many epochs (0: never).
      write_graph: accepted for Keras scripts; no graph is written (Keras on
        JAX writes none either).
      write_images: only False (Keras's default): weights are not drawn as images.
      write_steps_per_second: also write ``epoch_steps_per_second`` (training
        steps of the epoch over its wall time).
      update_freq: ``'epoch'``, ``'batch'`` (every step, as 1) or write
        ``batch_*`` scalars every this many steps (at the loop's logging
        points, i.e. multiples of ``log_every``).
      profile_batch: only 0 (Keras's default): use ``jax.profiler`` to profile.
      embeddings_freq: only 0 (Keras's default): no embedding projector.
      embeddings_metadata: only None, with ``embeddings_freq=0``.

    Example:
      >>> import os, tempfile
      >>> import numpy as np
      >>> import jaxnets
      >>> from jaxnets import layers
      >>> from jaxnets.callbacks import TensorBoard
      >>> model = jaxnets.Sequential([layers.Dense(1, input_shape=(2,))])
      >>> model.compile(optimizer="sgd", loss="mse")
      >>> x, y = np.ones((16, 2), np.float32), np.ones((16, 1), np.float32)
      >>> from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     _ = model.fit(x, y, epochs=2, verbose=0, validation_data=(x, y),
      ...                   callbacks=[TensorBoard(tmp, histogram_freq=1)])
      ...     print(sorted(os.listdir(tmp)))
      ...     events = EventAccumulator(os.path.join(tmp, "train"))
      ...     _ = events.Reload()
      ['train', 'validation']
      >>> sorted(events.Tags()["scalars"]), [e.step for e in events.Scalars("epoch_loss")]
      (['epoch_learning_rate', 'epoch_loss', 'epoch_skipped'], [0, 1])
      >>> sorted(events.Tags()["histograms"])
      ['params/layers_0/bias', 'params/layers_0/kernel']
    """

    def __init__(
        self,
        log_dir="logs",
        histogram_freq=0,
        write_graph=True,
        write_images=False,
        write_steps_per_second=False,
        update_freq="epoch",
        profile_batch=0,
        embeddings_freq=0,
        embeddings_metadata=None,
    ):
        super().__init__()
        # Keras's argument order, so that positional Keras calls port as they are.
        update_freq = 1 if update_freq == "batch" else update_freq
        if update_freq != "epoch" and not (
            isinstance(update_freq, int) and not isinstance(update_freq, bool) and update_freq > 0
        ):
            raise ConfigError(
                f"update_freq must be 'epoch', 'batch' or a positive int, got {update_freq!r}."
            )
        _refuse_unsupported(
            write_images=write_images,
            profile_batch=profile_batch,
            embeddings_freq=embeddings_freq,
            embeddings_metadata=embeddings_metadata,
        )
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = int(histogram_freq)
        self.write_graph = write_graph
        self.write_steps_per_second = bool(write_steps_per_second)
        self.update_freq = update_freq
        self._writers = {}
        self._epoch = 0
        self._last_batch_step = 0
        self._epoch_start = 0.0

    def _writer(self, split: str):
        if split not in self._writers:
            writer_cls, _, _ = _tensorboard()
            path = os.path.join(self.log_dir, split)
            os.makedirs(path, exist_ok=True)
            self._writers[split] = writer_cls(path)
        return self._writers[split]

    def _write(self, split: str, step: int, values: list):
        _, event_pb2, summary_pb2 = _tensorboard()
        summary = summary_pb2.Summary(value=values)
        event = event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)
        self._writer(split).add_event(event)

    def _scalars(self, split: str, step: int, scalars: dict):
        _, _, summary_pb2 = _tensorboard()
        values = [
            summary_pb2.Summary.Value(tag=tag, simple_value=float(v)) for tag, v in scalars.items()
        ]
        if values:
            self._write(split, step, values)

    def on_train_begin(self, logs=None):
        self._last_batch_step = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq == "epoch" or not logs:
            return
        step = self._epoch * self.params.get("steps", 0) + batch + 1
        if step - self._last_batch_step >= self.update_freq:
            self._last_batch_step = step
            self._scalars("train", step, {f"batch_{k}": v for k, v in _floats(logs).items()})

    def on_epoch_end(self, epoch, logs=None):
        logs = _floats(logs or {})
        train = {f"epoch_{k}": v for k, v in logs.items() if not k.startswith("val_")}
        val = {f"epoch_{k[4:]}": v for k, v in logs.items() if k.startswith("val_")}
        state = getattr(self.model, "state", None)
        if state is not None and "epoch_learning_rate" not in train:
            try:
                train["epoch_learning_rate"] = float(optim.current_learning_rate(state.opt_state))
            except ConfigError:
                pass  # an optax optimizer without an injected learning rate
        if self.write_steps_per_second and self.params.get("steps"):
            seconds = max(time.perf_counter() - self._epoch_start, 1e-9)
            train["epoch_steps_per_second"] = self.params["steps"] / seconds
        self._scalars("train", epoch, train)
        self._scalars("validation", epoch, val)
        if self.histogram_freq and epoch % self.histogram_freq == 0 and state is not None:
            _, _, summary_pb2 = _tensorboard()
            flat = jax.tree_util.tree_flatten_with_path(jax.device_get(state.params))[0]
            values = [
                summary_pb2.Summary.Value(
                    tag="params/" + "/".join(_key(k) for k in path), histo=histogram_proto(leaf)
                )
                for path, leaf in flat
            ]
            self._write("train", epoch, values)
        for w in self._writers.values():
            w.flush()

    def on_train_end(self, logs=None):
        for w in self._writers.values():
            w.close()
        self._writers = {}


def _refuse_unsupported(**options):
    """A ConfigError naming the Keras options given a value other than their default."""
    given = {k: v for k, v in options.items() if v not in (None, 0, False)}
    if given:
        listed = ", ".join(f"{k}={v!r}" for k, v in given.items())
        raise ConfigError(
            f"TensorBoard does not support {listed}: leave them at Keras's defaults "
            "(write_images=False, profile_batch=0, embeddings_freq=0, embeddings_metadata=None)."
        )


def _key(k) -> str:
    return str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))


def _floats(logs: dict) -> dict:
    out = {}
    for k, v in logs.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue  # per-class arrays are not scalars
    return out
