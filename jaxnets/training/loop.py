"""`fit`, `evaluate` and `predict`: host loops over the pure steps.

The loops only wire pure pieces together: batches come from
`jaxnets.data.iterate_batches` (fixed size, the last one padded and masked, so
one compilation serves the whole run), steps are compiled by an engine (see
`jaxnets.training.engine`), and metric sums stay on the device until the loop
fetches them every ``log_every`` steps and at the end of each epoch.

The order of epoch ``e`` depends only on ``(seed, e)`` and per-step randomness
only on ``(state.rng, state.step)``, so a run continued from a saved state at
``(initial_epoch, initial_step)`` sees exactly the batches and keys the
uninterrupted run would have seen.

Example:
  >>> import numpy as np, flax.linen as nn
  >>> from jaxnets.training import create_train_state, fit, evaluate
  >>> x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
  >>> y = (x[:, 0] > 0).astype(np.int32)
  >>> state = create_train_state(nn.Dense(2), "adam", x[:1], learning_rate=0.1)
  >>> state, history = fit(state, (x, y), epochs=3, batch_size=16, verbose=0)
  >>> len(history["loss"]), evaluate(state, (x, y), verbose=0)["accuracy"] > 0.8
  (3, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np

from jaxnets import compile as compile_lib
from jaxnets import metrics as metrics_lib
from jaxnets import validation
from jaxnets.callbacks.base import CallbackList
from jaxnets.data.batching import iterate_batches
from jaxnets.errors import ConfigError, DataError, lookup
from jaxnets.training import fused
from jaxnets.training.engine import default_engine, resolve_engine
from jaxnets.training.progress import ProgressBar
from jaxnets.training.state import TrainState
from jaxnets.training.step import eval_step, predict_step, train_step


def as_arrays(data, *, need_targets: bool = True) -> dict[str, np.ndarray]:
    """Normalizes ``(x, y)``, ``(x, y, weight)`` or a dict with ``x``/``y`` to a dict.

    Raises a `jaxnets.errors.DataError` naming the problem for empty data,
    missing targets or arrays of different lengths.

    Args:
      data: a tuple/list ``(x,)``, ``(x, y)`` or ``(x, y, weight)``; a dict
        with ``x`` (and ``y``, ``weight``, ``x_mask``...); or a single array,
        taken as ``x``. Entries that are None are dropped.
      need_targets: require a ``y`` (True, for training and evaluation); False
        for inputs alone (prediction).

    Returns:
      A dict of numpy arrays (``x``, and ``y``, ``weight``... where given),
      all with the same number of rows.

    Example:
      >>> import numpy as np
      >>> from jaxnets.training.loop import as_arrays
      >>> arrays = as_arrays((np.zeros((4, 3)), np.arange(4), np.ones(4)))
      >>> sorted(arrays), arrays["x"].shape
      (['weight', 'x', 'y'], (4, 3))
      >>> as_arrays((np.zeros((4, 3)), np.arange(3)))
      Traceback (most recent call last):
      ...
      jaxnets.errors.DataError: every array needs the same number of rows ...
    """
    if isinstance(data, Mapping):
        arrays = dict(data)
    elif isinstance(data, Sequence) and not isinstance(data, str) and 1 <= len(data) <= 3:
        arrays = dict(zip(("x", "y", "weight"), data, strict=False))
    else:
        arrays = {"x": data}
    if "x" not in arrays:
        raise DataError(f"data needs an 'x' entry; got keys {sorted(arrays)}.")
    if need_targets and arrays.get("y") is None:
        raise DataError(
            "training and evaluation need targets: pass (x, y) or {'x': ..., 'y': ...}."
        )
    nested = sorted(k for k in ("x", "y") if isinstance(arrays.get(k), Mapping))
    if nested:
        raise DataError(
            f"{' and '.join(nested)} must each be one array with a row per example; got a "
            "dict of arrays. fit, evaluate and predict batch one "
            "input array (models with several inputs can take them concatenated and split them "
            "inside); train_step and eval_step accept any pytree in your own loop."
        )
    arrays = {k: validation.to_numpy(k, v) for k, v in arrays.items() if v is not None}
    validation.check_rows(arrays)
    return arrays


def _check_positive_int(name: str, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}.")


def train_and_accumulate(state: TrainState, sums: dict, batch: dict):
    """`train_step` plus adding its metric sums to a running total (one dispatch)."""
    state, batch_sums = train_step(state, batch)
    return state, metrics_lib.merge(sums, batch_sums)


def eval_and_accumulate(state: TrainState, sums: dict, batch: dict):
    """`eval_step` plus adding its metric sums to a running total."""
    return metrics_lib.merge(sums, eval_step(state, batch))


class FitContext:
    """What callbacks see as ``self.model`` when `fit` is called directly."""

    def __init__(self, state: TrainState):
        self.state = state
        self.stop_training = False


def _count(value) -> int:
    # A counter fetched from the device (replicated copies under pmap agree).
    return int(np.max(np.asarray(value)))


def _rollback(ckpt, state, verbose) -> TrainState:
    # Params, model and optimizer state of the newest checkpoint; the step (so the
    # RNG and the data position) moves on, leaving the batches that diverged behind.
    if ckpt.manager.latest_step() is None:
        return state  # nothing saved yet; the in-graph guard kept the params finite
    good = ckpt.manager.restore(state).state
    if verbose:
        print(f"non-finite values this epoch: rolled back to step {int(good.step)}")
    return state.replace(params=good.params, model_state=good.model_state, opt_state=good.opt_state)


def _scalars(logs: dict) -> dict:
    return {k: v for k, v in logs.items() if isinstance(v, float)}


def wants_batch_logs(callbacks) -> bool:
    """True if a callback has its own ``on_train_batch_end`` (a method or an attribute).

    Args:
      callbacks: `jaxnets.callbacks.Callback` objects.

    Example:
      >>> from jaxnets.callbacks import History, LambdaCallback
      >>> wants_batch_logs([History()]), wants_batch_logs([LambdaCallback(on_train_batch_end=print)])
      (False, True)
    """
    from jaxnets.callbacks.base import Callback

    base = Callback.on_train_batch_end
    hooks = (getattr(c, "on_train_batch_end", None) for c in callbacks)
    return any(h is not None and getattr(h, "__func__", h) is not base for h in hooks)


def fit(
    state: TrainState,
    data,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    validation_data=None,
    shuffle: bool = True,
    seed: int = 0,
    callbacks=(),
    verbose: int | str = 1,
    log_every: int = 50,
    initial_epoch: int = 0,
    initial_step: int = 0,
    engine=None,
    callback_model=None,
    history: dict | None = None,
    allow_nonfinite: bool = False,
    workdir=None,
    save_every: int | str = "epoch",
    keep: int | None = 3,
    fuse: str | None = None,
    chunk_steps: int | None = None,
    buckets: Sequence[int] | None = None,
    on_nonfinite: str = "skip",
    devices=None,
    mesh=None,
    epoch_data: Callable[[int], object] | None = None,
) -> tuple[TrainState, dict[str, list]]:
    """Trains ``state`` on ``data`` for ``epochs`` epochs.

    Args:
      state: a `TrainState` (see `create_train_state`).
      data: ``(x, y)``, ``(x, y, sample_weight)`` or a dict with ``x``, ``y`` and
        optionally ``weight`` and ``x_mask`` (numpy arrays, same length).
      epochs: index of the epoch to stop before (Keras semantics with
        ``initial_epoch``).
      batch_size: rows per step; the last partial batch is padded and masked.
      validation_data: evaluated at each epoch end; logged with a ``val_`` prefix.
      shuffle: reshuffle each epoch with an order fixed by ``(seed, epoch)``.
      seed: the shuffle seed: epoch ``e``'s batch order is a function of
        ``(seed, e)`` only (unused with ``shuffle=False``); per-step randomness
        such as dropout comes from ``state.rng``, not from it.
      callbacks: `jaxnets.callbacks.Callback` objects.
      verbose: 0 silent, 1 progress bar, 2 one line per epoch.
      log_every: fetch metrics from the device every this many steps.
      initial_epoch, initial_step: where to continue (epoch index and batch
        index inside it), e.g. after restoring a checkpoint.
      engine: where to run (default: one device; see `jaxnets.parallel`).
      devices, mesh: shorthand for ``engine=jaxnets.parallel.make_engine(devices=,
        mesh=)``: data-parallel over these devices (an int, a list, or "all" as
        ``len(jax.devices())``) with jit + NamedSharding.
      callback_model: the object callbacks see as ``self.model``.
      history: a history to append to (resuming); default a new one.
      allow_nonfinite: let NaN/Inf inputs through instead of raising a
        `DataError`; the training step skips those updates and counts them.
      workdir: save checkpoints of the whole run in ``<workdir>/checkpoints``
        and resume from the newest complete one (which then takes precedence
        over ``initial_epoch``, ``initial_step`` and ``history``); see
        `jaxnets.checkpoint.resume`.
      save_every: ``"epoch"`` or a number of steps (mid-epoch saves resume exactly).
      keep: how many recent checkpoints to keep (None: all).
      fuse: ``"epoch"`` runs each epoch as one compiled `lax.scan` (same batches
        and keys as the per-step loop, so the same parameters); ``"run"`` runs
        the whole run, validation and an ``EarlyStopping`` included, as one
        dispatch. See `jaxnets.training.fused`.
      chunk_steps: with ``fuse="epoch"``, split each epoch into scans of this
        many steps; the progress bar and batch callbacks run between them.
      buckets: for variable-length rows (lengths from ``x_mask``), increasing
        bucket lengths: each batch holds one bucket cut to its length (see
        `jaxnets.data.batching.iterate_bucketed`); one compile per bucket.
        Per-step targets ``y`` ``(n, T, ...)`` are cut with ``x``.
      on_nonfinite: ``"skip"`` (the step skips non-finite updates and counts
        them) or ``"rollback"``: after an epoch with a skipped update or a
        non-finite loss, restore params, model and optimizer state from the
        newest checkpoint of ``workdir`` and go on with the next batches.
      epoch_data: for data drawn afresh each epoch (a generator of augmented
        batches): ``epoch_data(epoch)`` returns epoch ``epoch``'s data, in
        ``data``'s form with the same shapes and dtypes; it is called before
        each epoch of this call but the first, which trains on ``data``. Not
        with ``fuse="run"`` or ``buckets``. A resumed run draws its epochs
        anew: the source's position is not part of a checkpoint.

    At ``verbose >= 1`` a pre-flight report (compile seconds, FLOPs per step,
    peak memory, parameters) is printed before the first step; see `jaxnets.compile`.

    If the data or a callback raises, the error propagates unchanged and
    ``callback_model.state`` holds the state after the last completed step.

    Returns:
      ``(state, history)``; history maps each metric name to per-epoch values,
      and ``skipped`` to the number of updates skipped for NaN/Inf each epoch.

    Example:
      >>> import numpy as np, flax.linen as nn
      >>> from jaxnets.training import create_train_state, fit
      >>> x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
      >>> y = (x[:, 0] > 0).astype(np.int32)
      >>> state = create_train_state(nn.Dense(2), "adam", x[:1], learning_rate=0.1)
      >>> state, history = fit(state, (x, y), epochs=2, batch_size=16, verbose=0)  # donates state
      >>> int(state.step), sorted(history), history["skipped"]  # 2 epochs of ceil(50 / 16) steps
      (8, ['accuracy', 'loss', 'skipped'], [0, 0])
    """
    _check_positive_int("epochs", epochs)
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("log_every", log_every)
    lookup(on_nonfinite, {"skip": 0, "rollback": 1}, kind="on_nonfinite option")
    if on_nonfinite == "rollback" and workdir is None:
        raise ConfigError("on_nonfinite='rollback' restores checkpoints: pass workdir= too.")
    arrays = validation.check_inputs(state, as_arrays(data), allow_nonfinite=allow_nonfinite)
    if validation_data is not None:
        validation_data = validation.check_inputs(
            state, as_arrays(validation_data), allow_nonfinite=allow_nonfinite
        )
    engine = resolve_engine(engine, devices, mesh)
    # Multi-process engines check that every process holds as many rows.
    engine.check_data(arrays, batch_size)
    n = len(arrays["x"])
    steps = math.ceil(n / batch_size)
    compile_lib.ensure_default_cache()
    history = {} if history is None else history
    fused.check_fuse(fuse, chunk_steps, engine, arrays, buckets)
    if epoch_data is not None and (fuse == "run" or buckets is not None):
        raise ConfigError(
            "epoch_data= swaps the data between epochs: not with fuse='run' (one dispatch "
            "for the whole run) or buckets= (batches grouped by the first epoch's lengths)."
        )
    if fuse == "run":
        if workdir is not None or initial_step:
            raise ConfigError("fuse='run' cannot checkpoint or resume mid-epoch; use fuse='epoch'.")
        ctx = callback_model if callback_model is not None else FitContext(state)
        return fused.fit_run(
            state, arrays, epochs=epochs, batch_size=batch_size, validation_data=validation_data,
            shuffle_seed=seed if shuffle else None, callbacks=callbacks, verbose=verbose,
            initial_epoch=initial_epoch, engine=engine, ctx=ctx, history=history,
        )  # fmt: skip
    feed = fused.Feed(
        arrays, batch_size, seed if shuffle else None, engine,
        fuse=fuse, chunk_steps=chunk_steps, verbose=verbose, buckets=buckets, state=state,
    )  # fmt: skip
    steps = feed.steps
    ckpt = None
    if workdir is not None:
        from jaxnets.checkpoint.resume import FitCheckpointer

        data_order = {"seed": seed, "shuffle": shuffle, "batch_size": batch_size, "num_examples": n}
        ckpt = FitCheckpointer(
            workdir, save_every=save_every, keep=keep, data=data_order, verbose=verbose
        )
        state, initial_epoch, initial_step, history = ckpt.resume(
            state, callbacks, initial_epoch, initial_step, history
        )
    if initial_epoch < epochs:
        feed.starts_at(initial_step)
    ctx = callback_model if callback_model is not None else FitContext(state)
    ctx.stop_training = False
    cbs = CallbackList(
        callbacks, model=ctx, params={"epochs": epochs, "steps": steps, "verbose": verbose}
    )
    bar = ProgressBar(verbose, epochs, steps)
    state = engine.place_state(state)
    ctx.state = state
    skipped_total = _count(engine.fetch(state.skipped))
    # Mid-epoch metrics cost a host sync and a few eager ops on the host; fetch
    # them only for a progress bar or a callback that reads batch logs.
    batch_logs = bar.verbose == 1 or wants_batch_logs(cbs)
    cbs.on_train_begin()
    last_logs = None
    if ckpt is not None:
        ckpt.apply_callback_states(callbacks)
    first_epoch = initial_epoch  # trains on `data`; later ones on `epoch_data(epoch)`
    for epoch in range(initial_epoch, epochs):
        start = initial_step if epoch == initial_epoch else 0
        if epoch_data is not None and epoch > first_epoch:
            fresh = as_arrays(epoch_data(epoch))
            feed.replace_data(
                validation.check_inputs(state, fresh, allow_nonfinite=allow_nonfinite)
            )
        if ckpt is not None:  # a resumed epoch counts the skips before its checkpoint too
            skipped_total = ckpt.epoch_begin(skipped_total)
        cbs.on_epoch_begin(epoch)
        state = ctx.state  # after on_epoch_begin, which may replace it
        bar.epoch_begin(epoch, initial=start)
        sums, last = None, None
        # Steps, or scans of steps with fuse="epoch"; i is the last step of each.
        for i, batch in feed.epoch(epoch, start):
            last = i
            if sums is None:
                zeros = feed.zero_sums(state, batch)  # fresh device buffers (the step donates them)
                resumed = ckpt.initial_sums(zeros) if ckpt is not None else None
                sums = zeros if resumed is None else resumed
            ctx.state = state
            cbs.on_train_batch_begin(i)
            state = ctx.state  # a callback may change it (e.g. the learning rate) before the step
            state, sums = feed.step(state, sums, batch)
            ctx.state = state  # the last completed step, kept if the data or a callback raises
            if batch_logs and feed.log_due(i, log_every) and i + 1 < steps:
                logs = _scalars(metrics_lib.compute_all(state.metric_table, engine.fetch(sums)))
                bar.update(i + 1, logs)
                ctx.state = state
                cbs.on_train_batch_end(i, logs)
                state = ctx.state
            if ckpt is not None:
                ckpt.after_step(
                    state,
                    sums,
                    epoch=epoch,
                    step_in_epoch=i + 1,
                    steps=steps,
                    history=history,
                    callbacks=callbacks,
                )
            if ctx.stop_training:  # e.g. TerminateOnNaN at a logged batch, as in Keras
                break
        logs = {}
        if sums:
            host_sums, skipped = engine.fetch((sums, state.skipped))
            logs = metrics_lib.compute_all(state.metric_table, host_sums)
            if batch_logs and last == steps - 1:
                # The epoch's last step, whose metrics are the epoch's: its batch hook
                # runs here, on the fetch the epoch makes anyway (Keras calls it too).
                ctx.state = state
                cbs.on_train_batch_end(last, _scalars(logs))
                state = ctx.state
            logs["skipped"], skipped_total = _count(skipped) - skipped_total, _count(skipped)
            # Under float16 loss scaling an overflow skip is routine (the scale halves
            # and training goes on): there only a non-finite epoch loss means divergence.
            skips = logs["skipped"] if state.loss_scale is None else 0
            if on_nonfinite == "rollback" and (skips or not np.isfinite(logs["loss"])):
                state = _rollback(ckpt, state, verbose)
        if validation_data is not None:
            ctx.state = state
            cbs.on_test_begin()  # as Keras does around each epoch's validation
            val = evaluate(state, validation_data, batch_size=batch_size, verbose=0, engine=engine)
            cbs.on_test_end(_scalars(val))
            logs.update({f"val_{k}": v for k, v in val.items()})
        for k, v in logs.items():
            history.setdefault(k, []).append(v)
        bar.epoch_end(epoch, logs)
        ctx.state = state
        cbs.on_epoch_end(epoch, logs)
        last_logs = logs
        if ckpt is not None:
            ckpt.after_epoch(
                ctx.state,
                epoch=epoch,
                history=history,
                callbacks=callbacks,
                logs=logs,
                last=epoch + 1 == epochs,
                stopped=ctx.stop_training,
            )
        if ctx.stop_training:
            break
    cbs.on_train_end(last_logs)  # Keras passes the last epoch's logs
    if ckpt is not None:
        ckpt.close()
    return ctx.state, history


def evaluate(
    state: TrainState,
    data,
    *,
    batch_size: int = 128,
    verbose=0,
    engine=None,
    allow_nonfinite: bool = False,
) -> dict:
    """Loss and metrics of ``state`` on ``data`` (padded batches, exact masked means).

    Args:
      state: a `TrainState`; its loss and metrics (``metric_table``) are computed.
      data: ``(x, y)``, ``(x, y, sample_weight)`` or a dict with ``x``, ``y`` and
        optionally ``weight`` and ``x_mask``, as in `fit`.
      batch_size: rows per step; the last partial batch is padded and masked,
        so the means are over the real rows only.
      verbose: truthy prints one line ``loss: ... - metric: ...`` of the
        scalar results; 0 (default) is silent.
      engine: where to run (default: `jaxnets.training.default_engine`, one device).
      allow_nonfinite: let NaN/Inf in ``x``, ``y`` or ``weight`` through instead
        of raising a `DataError` (the results may then be non-finite).

    Returns:
      A dict from metric name (``loss`` and each metric) to a float, or a numpy
      array for per-class metrics.

    Example:
      >>> import numpy as np, flax.linen as nn
      >>> from jaxnets.training import create_train_state, evaluate
      >>> model = nn.Dense(2, kernel_init=nn.initializers.zeros)  # logits 0: p = 1/2 each
      >>> state = create_train_state(model, "sgd", np.zeros((1, 3), np.float32))
      >>> x, y = np.ones((5, 3), np.float32), np.array([0, 0, 0, 1, 1], np.int32)
      >>> logs = evaluate(state, (x, y), batch_size=2)  # the last batch is padded and masked
      >>> sorted(logs), round(logs["loss"], 4), round(logs["accuracy"], 4)  # a tie picks class 0
      (['accuracy', 'loss'], 0.6931, 0.6)
    """
    _check_positive_int("batch_size", batch_size)
    arrays = validation.check_inputs(state, as_arrays(data), allow_nonfinite=allow_nonfinite)
    engine = engine or default_engine()
    engine.check_data(arrays, batch_size)
    step_fn = engine.compile(eval_and_accumulate)
    sums = None
    for host_batch in iterate_batches(arrays, batch_size):
        batch = engine.place_batch(host_batch)
        if sums is None:
            sums = engine.place_state(fused.sums_like(state, batch))
        sums = step_fn(state, sums, batch)
    logs = metrics_lib.compute_all(state.metric_table, engine.fetch(sums))
    if verbose:
        print(" - ".join(f"{k}: {v:.4f}" for k, v in _scalars(logs).items()))
    return logs


def predict(
    state: TrainState,
    x,
    *,
    batch_size: int = 128,
    engine=None,
    x_mask=None,
    allow_nonfinite: bool = False,
) -> np.ndarray:
    """Model outputs for every row of ``x`` as a numpy array (padding removed).

    Args:
      state: a `TrainState`; the model runs in inference mode (``train=False``).
      x: the inputs ``(n, ...)``, a numpy (or array-like) array.
      batch_size: rows per step; the last partial batch is padded, and the
        padding rows are dropped from the result.
      engine: where to run (default: `jaxnets.training.default_engine`, one device).
      x_mask: optional ``(n, T)`` mask of the valid time steps of
        variable-length sequence inputs, passed to the model as ``mask``.
      allow_nonfinite: let NaN/Inf in ``x`` through instead of raising a `DataError`.

    Returns:
      The model outputs for the ``n`` rows, ``(n, ...)``, in float32 (also
      when the model computes in half precision); for a model with several
      outputs, the same tuple or dict of such arrays.

    Example:
      >>> import numpy as np, flax.linen as nn
      >>> from jaxnets.training import create_train_state, predict
      >>> model = nn.Dense(1, kernel_init=nn.initializers.ones)
      >>> state = create_train_state(model, "sgd", np.zeros((1, 2), np.float32),
      ...                            loss="mse", metrics=())
      >>> x = np.array([[1, 2], [3, 4], [5, 6]], np.float32)
      >>> predict(state, x, batch_size=2).tolist()  # row sums; 2 batches, the padding dropped
      [[3.0], [7.0], [11.0]]
    """
    _check_positive_int("batch_size", batch_size)
    arrays = as_arrays({"x": x, "x_mask": x_mask}, need_targets=False)
    arrays = validation.check_inputs(state, arrays, targets=False, allow_nonfinite=allow_nonfinite)
    engine = engine or default_engine()
    engine.check_data(arrays, batch_size)
    step_fn = engine.compile(predict_step)
    # Keep outputs on the device until the end: no host sync per batch.
    outputs = [step_fn(state, engine.place_batch(b)) for b in iterate_batches(arrays, batch_size)]
    host = engine.fetch(outputs)
    n = len(arrays["x"])
    # Engines may pad a batch up to their batch_multiple: keep its first batch_size rows.
    # A model with several outputs (a tuple or dict) gets each one joined the same way.
    return jax.tree.map(
        lambda *parts: np.concatenate([np.asarray(p)[:batch_size] for p in parts])[:n], *host
    )
