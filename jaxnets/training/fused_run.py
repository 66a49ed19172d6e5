"""``fit(..., fuse="run")``: a whole run, validation and early stopping included, as one dispatch.

`fit_run` draws every epoch's order on the host (as `jaxnets.training.fused`
does per epoch), sends them to the device at once, and runs one compiled
`lax.while_loop` whose body is a fused epoch (`train_chunk`), the validation
sums (`eval_chunk`) and Keras's ``EarlyStopping`` rules on ``loss`` or
``val_loss`` (taken from an ``EarlyStopping`` among the callbacks). The loop
stops early on the device; the per-epoch metric sums come back at the end and
become the usual history. Other callbacks then see each epoch's
``on_epoch_begin``/``on_epoch_end`` with its logs, after the fact: they cannot
change the state or stop the run (use ``fuse="epoch"`` for that); the callbacks
that exist to do so (learning-rate schedules, ``ModelCheckpoint``, ``TerminateOnNaN``,
``GradualUnfreezing``) are refused with a `ConfigError`.

Example:
  >>> import numpy as np, flax.linen as nn
  >>> from jaxnets.callbacks import EarlyStopping
  >>> from jaxnets.training import create_train_state, fit
  >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
  >>> y = (x[:, 0] > 0).astype(np.int32)
  >>> state = create_train_state(nn.Dense(2), "adam", x[:1], learning_rate=0.1)
  >>> es = EarlyStopping(monitor="val_loss", patience=2)
  >>> flipped = (x, 1 - y)  # a validation loss that rises as the model learns
  >>> state, history = fit(state, (x, y), epochs=50, batch_size=16, validation_data=flipped,
  ...                      callbacks=[es], fuse="run", verbose=0)
  >>> len(history["val_loss"]), es.stopped_epoch
  (3, 2)
"""

from __future__ import annotations

import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxnets import compile as compile_lib
from jaxnets import metrics as metrics_lib
from jaxnets.data.batching import padding_row
from jaxnets.errors import ConfigError
from jaxnets.training.fused import (
    check_fuse,
    epoch_plan,
    eval_chunk,
    print_report,
    train_chunk,
    zero_sums,
)


def is_early_stopping(callback) -> bool:
    """True for a `jaxnets.callbacks.EarlyStopping` (or a subclass).

    Not "has ``patience`` and ``monitor``": ``ReduceLROnPlateau`` has both, and
    was compiled in as an early stop (a run of 6 epochs stopped after 2).
    """
    from jaxnets.callbacks.early_stopping import EarlyStopping

    return isinstance(callback, EarlyStopping)


def _acting_callback_types() -> tuple:
    """Callbacks that change, save or stop the training between epochs."""
    from jaxnets.callbacks.lr import LearningRateScheduler, ReduceLROnPlateau
    from jaxnets.callbacks.misc import TerminateOnNaN
    from jaxnets.callbacks.model_checkpoint import ModelCheckpoint
    from jaxnets.checkpoint.freezing import GradualUnfreezing

    return (
        LearningRateScheduler, ReduceLROnPlateau, GradualUnfreezing, ModelCheckpoint,
        TerminateOnNaN,
    )  # fmt: skip


def check_replayable(callbacks) -> None:
    """`ConfigError` for callbacks that must act between epochs, which one dispatch cannot give.

    `fit_run` replays the epochs to the callbacks afterwards, with the final
    state: a learning-rate callback would have trained nothing and then left its
    last rate in the returned state, a `ModelCheckpoint` would save the final
    weights under every epoch's name.
    """
    acting = [type(c).__name__ for c in callbacks if isinstance(c, _acting_callback_types())]
    if acting:
        raise ConfigError(
            f"fuse='run' runs every epoch in one dispatch, so {', '.join(acting)} cannot act "
            "between epochs (it would only see the final state afterwards); use fuse='epoch'."
        )


def early_stopping_of(callbacks, has_validation: bool):
    """The Keras ``EarlyStopping`` settings among ``callbacks`` that `fit_run` compiles in."""
    found = [c for c in callbacks if is_early_stopping(c)]
    if not found:
        return None
    if len(found) > 1:
        raise ConfigError("fuse='run' compiles one EarlyStopping into the loop; got several.")
    es = found[0]
    problem = None
    if es.monitor not in ("loss", "val_loss"):
        problem = f"monitor={es.monitor!r} (only 'loss' and 'val_loss' are compiled in)"
    elif es.monitor == "val_loss" and not has_validation:
        problem = "monitor='val_loss' without validation_data"
    elif getattr(es, "mode", "min") not in ("min", "auto"):
        problem = f"mode={es.mode!r}"
    elif getattr(es, "baseline", None) is not None:
        problem = "a baseline"
    if problem:
        raise ConfigError(
            f"fuse='run' cannot compile EarlyStopping with {problem}; use fuse='epoch'."
        )
    return (
        es.monitor,
        int(es.patience),
        abs(float(getattr(es, "min_delta", 0.0))),
        bool(getattr(es, "restore_best_weights", False)),
        int(getattr(es, "start_from_epoch", 0)),
    )


def _mean_loss(sums):
    return sums["loss"]["total"] / jnp.maximum(sums["loss"]["count"], 1e-12)


def _row(tree, k: int):
    return jax.tree.map(lambda h: h[k], tree)


def _where(flag, new, old):
    return jax.tree.map(lambda a, b: jnp.where(flag, a, b), new, old)


_RUN_PROGRAMS: dict = {}


def run_program(es, has_val: bool):
    """The whole-run program for one early-stopping setting (built once, so it compiles once)."""
    key = (es, has_val)
    if key in _RUN_PROGRAMS:
        return _RUN_PROGRAMS[key]

    def run(state, data, plans, val_data, val_plan, first_epoch, zero_train, zero_val):
        epochs = plans["index"].shape[0]
        stack = lambda z: jnp.zeros((epochs, *z.shape), z.dtype)
        carry = {
            "j": jnp.int32(0),
            "state": state,
            "stop": jnp.bool_(False),
            "best": jnp.float32(jnp.inf),
            "wait": jnp.int32(0),
            "best_epoch": jnp.int32(0),
            "best_vars": (state.params, state.model_state),
            "best_set": jnp.bool_(False),
            "train": jax.tree.map(stack, zero_train),
            "val": jax.tree.map(stack, zero_val),
            "skipped": jnp.zeros((epochs,), jnp.int32),
        }

        def body(c):
            j, epoch = c["j"], first_epoch + c["j"]
            plan = {"index": plans["index"][j], "valid": plans["valid"]}
            st, sums = train_chunk(c["state"], zero_train, data, plan)
            out = dict(c, j=j + 1, state=st)
            out["train"] = jax.tree.map(lambda h, s: h.at[j].set(s), c["train"], sums)
            out["skipped"] = c["skipped"].at[j].set(st.skipped)
            current = _mean_loss(sums)
            if has_val:
                vsums = eval_chunk(st, zero_val, val_data, val_plan)
                out["val"] = jax.tree.map(lambda h, s: h.at[j].set(s), c["val"], vsums)
                current = _mean_loss(vsums) if es and es[0] == "val_loss" else current
            if es:  # Keras 3 EarlyStopping.on_epoch_end, on the device
                _, patience, min_delta, restore, start = es
                on = epoch >= start
                wait = c["wait"] + 1
                better = current + min_delta < c["best"]
                out["best"] = jnp.where(on & better, current, c["best"])
                out["wait"] = jnp.where(on, jnp.where(better, 0, wait), c["wait"])
                # Keras's best_epoch: the first epoch it snapshots, then each improvement.
                first = on & ~c["best_set"] if restore else jnp.bool_(False)
                out["best_epoch"] = jnp.where((on & better) | first, epoch, c["best_epoch"])
                out["stop"] = on & ~better & (wait >= patience) & (epoch > 0)
                if restore:
                    snap = on & (better | ~c["best_set"])
                    out["best_vars"] = _where(snap, (st.params, st.model_state), c["best_vars"])
                out["best_set"] = c["best_set"] | on
            return out

        c = lax.while_loop(lambda c: (c["j"] < epochs) & ~c["stop"], body, carry)
        state = c["state"]
        if es and es[3]:
            params, model_state = _where(
                c["best_set"], c["best_vars"], (state.params, state.model_state)
            )
            state = state.replace(params=params, model_state=model_state)
        es_state = {k: c[k] for k in ("best", "best_epoch", "wait")}
        return state, c["j"], c["stop"], c["train"], c["val"], c["skipped"], es_state

    _RUN_PROGRAMS[key] = run
    return run


def fit_run(
    state,
    arrays,
    *,
    epochs,
    batch_size,
    validation_data,
    shuffle_seed,
    callbacks,
    verbose,
    initial_epoch,
    engine,
    ctx,
    history,
):
    """``fit(..., fuse="run")``: the whole run in one `lax.while_loop`; see the module doc."""
    from jaxnets.callbacks.base import CallbackList
    from jaxnets.training.progress import _fmt

    check_fuse("run", None, engine, arrays)
    check_replayable(callbacks)
    es = early_stopping_of(callbacks, validation_data is not None)
    n, epoch_list = len(arrays["x"]), range(initial_epoch, epochs)
    if not epoch_list:  # nothing left to train (a finished run), as in the per-step loop
        cbs = CallbackList(callbacks, model=ctx, params={"epochs": epochs, "verbose": verbose})
        ctx.stop_training = False
        cbs.on_train_begin()
        cbs.on_train_end(None)
        return ctx.state, history
    pad = padding_row(arrays) if n % batch_size else 0
    plans = [epoch_plan(n, batch_size, shuffle_seed, e, pad) for e in epoch_list]
    plans = {"index": np.stack([p["index"] for p in plans]), "valid": plans[0]["valid"]}
    # One epoch's plan from the host copy: only its shapes matter, and indexing the
    # device copy would compile a slicing program.
    row = {"index": plans["index"][0], "valid": plans["valid"]}
    data, plans = engine.place_state(arrays), engine.place_state(plans)
    zero_train = zero_sums(state, data, row)
    val_data = val_plan = zero_val = None
    if validation_data is not None:
        val_data = engine.place_state(validation_data)
        val_n = len(validation_data["x"])
        val_pad = padding_row(validation_data) if val_n % batch_size else 0
        val_plan = engine.place_state(epoch_plan(val_n, batch_size, None, 0, val_pad))
        zero_val = zero_sums(state, val_data, val_plan)
    report = compile_lib.CompileReport(params=compile_lib.param_count(state.params))
    note = "FLOPs of one train + one eval step" if validation_data is not None else ""
    runner = compile_lib.GuardedStep(
        engine.compile(run_program(es, validation_data is not None), donate_argnums=(0,)),
        "fused run",
        ("state", "data", "plans", "val_data", "val_plan", "first_epoch", "zeros", "val_zeros"),
        report=report,
    )
    args = (data, plans, val_data, val_plan, np.int32(initial_epoch), zero_train, zero_val)
    state = engine.place_state(state)
    runner.compile_for(state, *args, note=note)
    if int(verbose) >= 1 or verbose == "auto":
        print_report(report)
    cbs = CallbackList(callbacks, model=ctx, params={"epochs": epochs, "verbose": verbose})
    replay = CallbackList([c for c in callbacks if not (es and is_early_stopping(c))])
    replay.set_model(ctx)
    cbs.on_train_begin()
    skipped_before = int(np.max(np.asarray(engine.fetch(state.skipped))))
    start = time.perf_counter()
    state, done, stopped, train_h, val_h, skipped, es_state = engine.fetch(runner(state, *args))
    seconds = time.perf_counter() - start
    ctx.state = trained = engine.place_state(state)
    for k in range(int(done)):
        epoch = initial_epoch + k
        replay.on_epoch_begin(epoch)
        logs = metrics_lib.compute_all(state.metric_table, _row(train_h, k))
        logs["skipped"], skipped_before = int(skipped[k]) - skipped_before, int(skipped[k])
        if val_h is not None:
            val = metrics_lib.compute_all(state.metric_table, _row(val_h, k))
            logs.update({f"val_{m}": v for m, v in val.items()})
        for m, v in logs.items():
            history.setdefault(m, []).append(v)
        if verbose:
            print(f"Epoch {epoch + 1}/{epochs} - {_fmt(logs)}")
        replay.on_epoch_end(epoch, logs)
    if verbose:
        print(f"fused run: {int(done)} epochs in one dispatch, {seconds:.2f}s")
    if ctx.state is not trained:
        # The epochs ran before their callbacks: a state set in on_epoch_begin/_end
        # would only overwrite the trained one (on_train_end, which runs at the
        # real end, may still change it).
        warnings.warn(
            "a callback changed the model state while fuse='run' replayed its epochs; the "
            "change is ignored (the epochs had already run). Use fuse='epoch' for callbacks "
            "that change the state between epochs.",
            stacklevel=3,
        )
        ctx.state = trained
    ctx.stop_training = bool(stopped)
    for c in callbacks:
        if es and is_early_stopping(c):
            # The callback's state as if it had watched the epochs (get_state, verbose lines).
            c.best, c.best_epoch, c.wait = (
                float(es_state["best"]),
                int(es_state["best_epoch"]),
                int(es_state["wait"]),
            )
            if bool(stopped):
                c.stopped_epoch = initial_epoch + int(done) - 1
    cbs.on_train_end()
    return ctx.state, history
