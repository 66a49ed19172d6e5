"""`fit`: the host loop over the pure training step.

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
from collections.abc import Callable, Sequence

import numpy as np

from jaxnets import compile as compile_lib
from jaxnets import metrics as metrics_lib
from jaxnets import validation
from jaxnets.callbacks.base import CallbackList
from jaxnets.errors import ConfigError, lookup
from jaxnets.training import fused
from jaxnets.training.engine import resolve_engine
from jaxnets.training.inference import evaluate, scalar_logs
from jaxnets.training.inputs import as_arrays, check_positive_int
from jaxnets.training.progress import ProgressBar
from jaxnets.training.state import TrainState
from jaxnets.training.step import train_step


def train_and_accumulate(state: TrainState, sums: dict, batch: dict):
    """`train_step` plus adding its metric sums to a running total (one dispatch)."""
    state, batch_sums = train_step(state, batch)
    return state, metrics_lib.merge(sums, batch_sums)


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
    check_positive_int("epochs", epochs)
    check_positive_int("batch_size", batch_size)
    check_positive_int("log_every", log_every)
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
                logs = scalar_logs(metrics_lib.compute_all(state.metric_table, engine.fetch(sums)))
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
                cbs.on_train_batch_end(last, scalar_logs(logs))
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
            cbs.on_test_end(scalar_logs(val))
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
