"""Fused training: the dataset on the device, an epoch (or a whole run) per dispatch.

The batches are the very batches of `jaxnets.data.iterate_batches`: epoch
``e`` visits rows in the order ``np.random.default_rng([seed, e]).permutation(n)``
(see `jaxnets.data.batching.epoch_order`), and the last batch is padded with
row 0 and masked. That order is drawn on the host (an int32 array, cheap), sent
to the device, and the compiled program gathers each batch by index from the
device-resident dataset. Per-step keys are ``fold_in(state.rng, state.step)``
as in `train_step`, so the per-step loop and the fused one take identical steps.

* ``fit(..., fuse="epoch")`` runs each epoch as one `lax.scan` over
  `train_step` with metric sums in the carry; ``chunk_steps`` splits it so the
  progress bar and batch callbacks run between chunks.
* ``fit(..., fuse="run")`` (`fit_run`) runs the whole run, validation and early
  stopping included, as one `lax.while_loop`: one dispatch. Callbacks see the
  epochs afterwards (logs only); an ``EarlyStopping`` on ``loss``/``val_loss`` is
  compiled into the loop with Keras's rules.
* The per-step loop (no ``fuse``) on one device also keeps the data on the
  device and sends only the step number per step (`Feed`).

Example:
  >>> import numpy as np, flax.linen as nn
  >>> from jaxnets.training import create_train_state, fit
  >>> x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
  >>> y = (x[:, 0] > 0).astype(np.int32)
  >>> new = lambda: create_train_state(nn.Dense(2), "adam", x[:1], learning_rate=0.1)
  >>> a, _ = fit(new(), (x, y), epochs=2, batch_size=16, verbose=0)  # fit donates its state
  >>> b, _ = fit(new(), (x, y), epochs=2, batch_size=16, verbose=0, fuse="epoch")
  >>> bool(np.allclose(a.params["kernel"], b.params["kernel"], atol=1e-6))
  True
"""

from __future__ import annotations

import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxnets import compile as compile_lib
from jaxnets import metrics as metrics_lib
from jaxnets.data.batching import bucket_by_length, epoch_order, iterate_batches, iterate_bucketed
from jaxnets.errors import ConfigError
from jaxnets.training.engine import LocalEngine
from jaxnets.training.step import eval_step, train_step

FUSE_MODES = (None, "epoch", "run")
# Datasets above this stay on the host in the per-step loop (fused modes need the device).
DEVICE_DATA_LIMIT = 2 * 2**30


def epoch_plan(n: int, batch_size: int, shuffle_seed: int | None, epoch: int) -> dict:
    """Row indices ``(steps, B)`` int32 and validity ``(steps, B)`` float32 of one epoch.

    Row ``s`` is batch ``s`` of `iterate_batches` (padding: row 0, valid 0).

    Example:
      >>> epoch_plan(5, 2, None, 0)["index"].tolist()
      [[0, 1], [2, 3], [4, 0]]
    """
    steps = math.ceil(n / batch_size)
    index = np.zeros(steps * batch_size, np.int32)
    index[:n] = epoch_order(n, shuffle_seed, epoch)
    valid = (np.arange(steps * batch_size) < n).astype(np.float32)
    return {"index": index.reshape(steps, batch_size), "valid": valid.reshape(steps, batch_size)}


def gather_batch(data: dict, index, valid) -> dict:
    """The batch of rows ``index`` with ``mask``/``weight`` as `iterate_batches` builds them."""
    out = {k: v[index] for k, v in data.items()}
    out["mask"] = valid * out["mask"].astype(jnp.float32) if "mask" in out else valid
    if "weight" in out:
        out["weight"] = jnp.where(valid > 0, out["weight"], 0).astype(out["weight"].dtype)
    return out


def train_indexed(state, sums, data, plan, i):
    """One `train_step` on row ``i`` of an epoch plan, plus accumulating its metric sums."""
    state, batch_sums = train_step(state, gather_batch(data, plan["index"][i], plan["valid"][i]))
    return state, metrics_lib.merge(sums, batch_sums)


def train_chunk(state, sums, data, plan):
    """`train_step` on every row of ``plan`` in one `lax.scan`; metric sums in the carry."""

    def body(carry, row):
        state, sums = carry
        state, batch_sums = train_step(state, gather_batch(data, *row))
        return (state, metrics_lib.merge(sums, batch_sums)), None

    (state, sums), _ = lax.scan(body, (state, sums), (plan["index"], plan["valid"]))
    return state, sums


def eval_chunk(state, sums, data, plan):
    """`eval_step` sums over every row of ``plan`` in one `lax.scan`."""

    def body(sums, row):
        return metrics_lib.merge(sums, eval_step(state, gather_batch(data, *row))), None

    return lax.scan(body, sums, (plan["index"], plan["valid"]))[0]


def zero_sums(fn, state, data, plan):
    """Zeros shaped like the metric sums ``fn(state, batch)`` returns for one planned batch."""
    shapes = jax.eval_shape(
        lambda s, d, p: fn(s, gather_batch(d, p["index"][0], p["valid"][0])), state, data, plan
    )
    shapes = shapes[1] if isinstance(shapes, tuple) else shapes
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def can_keep_on_device(engine, arrays: dict) -> bool:
    """True for the single-device engine and a dataset that fits `DEVICE_DATA_LIMIT`."""
    return type(engine) is LocalEngine and sum(v.nbytes for v in arrays.values()) <= (
        DEVICE_DATA_LIMIT
    )


def print_report(report, file=None):
    """Prints a pre-flight report above any progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(str(report), file=file or sys.stdout)


def check_fuse(fuse, chunk_steps, engine, arrays) -> None:
    if fuse not in FUSE_MODES:
        raise ConfigError(f"fuse must be None, 'epoch' or 'run', got {fuse!r}.")
    if chunk_steps is not None and (
        isinstance(chunk_steps, bool) or not isinstance(chunk_steps, int) or chunk_steps < 1
    ):
        raise ConfigError(f"chunk_steps must be a positive int or None, got {chunk_steps!r}.")
    if fuse is not None and type(engine) is not LocalEngine:
        raise ConfigError(
            f"fuse={fuse!r} runs on one device (the default engine); got {type(engine).__name__}. "
            "Drop fuse= to train with this engine."
        )


class Feed:
    """What the `fit` loop iterates: units of work (a step or a chunk) and their runner.

    Args:
      arrays: the training arrays (as `jaxnets.training.loop.as_arrays` returns).
      batch_size, shuffle_seed: as in `iterate_batches`.
      engine: the engine; the dataset stays on the device for the single-device one.
      fuse: None (one step per unit) or ``"epoch"`` (one `lax.scan` per unit).
      chunk_steps: steps per unit with ``fuse="epoch"`` (default: the whole epoch).
      verbose: at >= 1 the pre-flight report is printed when the step compiles.
      buckets: bucket boundaries for variable-length rows (lengths from
        ``x_mask``): batches of one bucket, cut to its length; one compile each.
    """

    def __init__(
        self,
        arrays,
        batch_size,
        shuffle_seed,
        engine,
        *,
        fuse=None,
        chunk_steps=None,
        verbose=0,
        buckets=None,
    ):
        check_fuse(fuse, chunk_steps, engine, arrays)
        self.arrays, self.batch_size, self.shuffle_seed = arrays, batch_size, shuffle_seed
        self.engine, self.fuse = engine, fuse
        self.n = len(arrays["x"])
        self.steps = math.ceil(self.n / batch_size)
        self.chunk = self.steps if fuse and chunk_steps is None else (chunk_steps or 1)
        self.device = fuse is not None or can_keep_on_device(engine, arrays)
        self.buckets, self.lengths, variants, describe = buckets, None, 1, None
        if buckets is not None:
            if fuse or "x_mask" not in arrays:
                raise ConfigError(
                    "buckets= needs an 'x_mask' (n, T) in the data (True = valid step) and "
                    "the per-step loop (no fuse=)."
                )
            self.lengths = np.asarray(arrays["x_mask"]).astype(bool).sum(axis=1)
            groups = bucket_by_length(self.lengths, buckets)
            self.steps = sum(math.ceil(len(ix) / batch_size) for ix in groups.values())
            self.device, variants = False, len(groups)
            describe = lambda args: f"length {args[2]['x'].shape[1]}"
        self.data = engine.place_state(arrays) if self.device else None
        self._zeros = None
        report = compile_lib.CompileReport()

        def on_compile(program):
            if int(verbose) >= 1 or verbose == "auto":
                print_report(report if len(report.programs) == 1 else program)

        if fuse:
            fn, names, name = train_chunk, ("state", "sums", "data", "plan"), "fused epoch"
        elif self.device:
            fn, names, name = train_indexed, ("state", "sums", "data", "plan", "i"), "train step"
        else:
            from jaxnets.training.loop import train_and_accumulate

            fn, names, name = train_and_accumulate, ("state", "sums", "batch"), "train step"
        # Chunks of two lengths (a shorter last one, or a shorter first one on resume)
        # are planned, not retraces.
        variants = 3 if fuse and self.chunk < self.steps else variants
        self.runner = compile_lib.GuardedStep(
            engine.compile(fn, donate_argnums=(0, 1)),
            name,
            names,
            expected_variants=variants,
            on_compile=on_compile,
            report=report,
            describe=describe,
        )
        self.report = report

    def epoch(self, epoch: int, start: int = 0):
        """Yields ``(i, unit)``: ``i`` the index of the last step the unit runs."""
        if self.lengths is not None:
            batches = iterate_bucketed(
                self.arrays, self.lengths, self.buckets, self.batch_size,
                shuffle_seed=self.shuffle_seed, epoch=epoch, start_step=start,
            )  # fmt: skip
            for i, host_batch in enumerate(batches, start=start):
                yield i, (self.engine.place_batch(host_batch),)
            return
        if not self.device:
            batches = iterate_batches(
                self.arrays,
                self.batch_size,
                shuffle_seed=self.shuffle_seed,
                epoch=epoch,
                start_step=start,
            )
            for i, host_batch in enumerate(batches, start=start):
                yield i, (self.engine.place_batch(host_batch),)
            return
        plan = epoch_plan(self.n, self.batch_size, self.shuffle_seed, epoch)
        if not self.fuse:
            plan = self.engine.place_state(plan)
            for i in range(start, self.steps):
                yield i, (self.data, plan, np.int32(i))
            return
        a = start
        while a < self.steps:
            b = min(self.steps, (a // self.chunk + 1) * self.chunk)
            piece = self.engine.place_state({k: v[a:b] for k, v in plan.items()})
            yield b - 1, (self.data, piece)
            a = b

    def zero_sums(self, state, unit):
        """Fresh zero metric sums on the device for ``state``'s metrics."""
        if self._zeros is None:
            if self.device:
                plan = unit[1]
                zeros = zero_sums(train_step, state, self.data, plan)
            else:
                from jaxnets.training.loop import _zeros_like_sums

                zeros = _zeros_like_sums(train_step, state, unit[0])
            self._zeros = self.engine.place_state(zeros)
            self.report.params = compile_lib.param_count(state.params)
        return jax.tree.map(jnp.copy, self._zeros)

    def step(self, state, sums, unit):
        """Runs one unit; returns ``(state, sums)``."""
        return self.runner(state, sums, *unit)

    def log_due(self, i: int, log_every: int) -> bool:
        """Whether the loop should fetch metrics after the unit ending at step ``i``."""
        return bool(self.fuse) or (i + 1) % log_every == 0


def early_stopping_of(callbacks, has_validation: bool):
    """The Keras ``EarlyStopping`` settings among ``callbacks`` that `fit_run` compiles in."""
    found = [c for c in callbacks if hasattr(c, "patience") and hasattr(c, "monitor")]
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
        return state, c["j"], c["stop"], c["train"], c["val"], c["skipped"]

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
    from jaxnets.training.progress import ProgressBar

    check_fuse("run", None, engine, arrays)
    es = early_stopping_of(callbacks, validation_data is not None)
    n, epoch_list = len(arrays["x"]), range(initial_epoch, epochs)
    plans = [epoch_plan(n, batch_size, shuffle_seed, e) for e in epoch_list]
    plans = {"index": np.stack([p["index"] for p in plans]), "valid": plans[0]["valid"]}
    data, plans = engine.place_state(arrays), engine.place_state(plans)
    row = {"index": plans["index"][0], "valid": plans["valid"]}
    zero_train = zero_sums(train_step, state, data, row)
    val_data = val_plan = zero_val = None
    if validation_data is not None:
        val_data = engine.place_state(validation_data)
        val_plan = engine.place_state(epoch_plan(len(validation_data["x"]), batch_size, None, 0))
        zero_val = zero_sums(eval_step, state, val_data, val_plan)
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
    replay = CallbackList([c for c in callbacks if not (hasattr(c, "patience") and es)])
    replay.set_model(ctx)
    cbs.on_train_begin()
    skipped_before = int(np.max(np.asarray(engine.fetch(state.skipped))))
    state, done, stopped, train_h, val_h, skipped = engine.fetch(runner(state, *args))
    bar = ProgressBar(2 if int(verbose or 0) else 0, epochs, 0)
    ctx.state = engine.place_state(state)
    for k in range(int(done)):
        epoch = initial_epoch + k
        replay.on_epoch_begin(epoch)
        bar.epoch_begin(epoch)
        logs = metrics_lib.compute_all(state.metric_table, _row(train_h, k))
        logs["skipped"], skipped_before = int(skipped[k]) - skipped_before, int(skipped[k])
        if val_h is not None:
            val = metrics_lib.compute_all(state.metric_table, _row(val_h, k))
            logs.update({f"val_{m}": v for m, v in val.items()})
        for m, v in logs.items():
            history.setdefault(m, []).append(v)
        bar.epoch_end(epoch, logs)
        replay.on_epoch_end(epoch, logs)
    ctx.stop_training = bool(stopped)
    for c in callbacks:
        if es and hasattr(c, "patience") and hasattr(c, "stopped_epoch") and bool(stopped):
            c.stopped_epoch = initial_epoch + int(done) - 1
    cbs.on_train_end()
    return ctx.state, history
