"""Fused training: the dataset on the device, an epoch (or a whole run) per dispatch.

The batches are the very batches of `jaxnets.data.iterate_batches`: epoch
``e`` visits rows in the order ``np.random.default_rng([seed, e]).permutation(n)``
(see `jaxnets.data.batching.epoch_order`), and the last batch is padded with
`jaxnets.data.batching.padding_row` (row 0 unless it is not finite) and
masked. That order is drawn on the host (an int32 array, cheap), sent to the
device, and the compiled program gathers each batch by index from the
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
from jaxnets import cpu_memory, executable_store
from jaxnets import metrics as metrics_lib
from jaxnets.data.batching import (
    bucket_by_length,
    epoch_order,
    iterate_batches,
    iterate_bucketed,
    mask_extents,
    padding_row,
)
from jaxnets.errors import ConfigError, DataError
from jaxnets.training.engine import LocalEngine
from jaxnets.training.step import eval_step, predict_step, train_step

FUSE_MODES = (None, "epoch", "run")
# Datasets above this stay on the host in the per-step loop (fused modes need the device).
DEVICE_DATA_LIMIT = 2 * 2**30


def epoch_plan(
    n: int, batch_size: int, shuffle_seed: int | None, epoch: int, pad_row: int = 0
) -> dict:
    """Row indices ``(steps, B)`` int32 and validity ``(steps, B)`` float32 of one epoch.

    Row ``s`` is batch ``s`` of `iterate_batches` (padding: row ``pad_row``,
    valid 0); pass ``padding_row(arrays)`` as `iterate_batches` uses it.

    Example:
      >>> epoch_plan(5, 2, None, 0)["index"].tolist()
      [[0, 1], [2, 3], [4, 0]]
      >>> epoch_plan(5, 2, None, 0, pad_row=3)["index"].tolist()[-1]
      [4, 3]
    """
    steps = math.ceil(n / batch_size)
    index = np.full(steps * batch_size, pad_row, np.int32)
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


def sums_like(state, batch):
    """Host (numpy) zeros shaped like the metric sums a train or eval step returns for ``batch``.

    A train step's sums are shaped like `eval_step`'s, so that is what is
    traced (it needs no collective axis: a BatchNorm with ``axis_name`` is only
    bound inside the pmap engine's program). The shapes are kept per argument
    signature: tracing a step costs as much as a short fit, and every fit,
    evaluation and population call needs them.
    """
    key = compile_lib.signature((state, batch))
    shapes = _SUM_SHAPES.get(key)
    if shapes is None:
        shapes = executable_store.eval_shape("metric sums", eval_step, state, batch)
        shapes = _SUM_SHAPES.put(key, shapes)
    # Host zeros: `jnp.zeros` would compile (or load from the cache) one program
    # per shape before the first step; a transfer compiles nothing.
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


_SUM_SHAPES = compile_lib.BoundedCache(limit=64)


def _first_batch(data, plan):
    return gather_batch(data, plan["index"][0], plan["valid"][0])


def zero_sums(state, data, plan):
    """`sums_like` for one batch of an epoch plan over device-resident ``data``."""
    # Row 0 is taken inside eval_shape: indexing a device array eagerly compiles.
    # A module-level function, so JAX keeps its trace: a new lambda was traced
    # again by every fit and population (~1.1 ms: a population's set-up went
    # from 4.2 to 3.0 ms).
    return sums_like(state, executable_store.eval_shape("first batch", _first_batch, data, plan))


def per_step_targets(state, arrays: dict) -> bool:
    """True if ``y`` holds one target per time step of ``x_mask`` for a per-step model.

    A ``(n, T, ...)`` target is per step when the model's output follows the
    input's length (its axis 1 is ``T`` for ``T`` steps and ``T - 1`` for
    ``T - 1``), so a ``(n, C)`` one-hot target with ``C == T`` classes is not
    mistaken for one. Only shapes are evaluated (`jax.eval_shape`).
    """
    y, x, x_mask = arrays.get("y"), arrays["x"], arrays["x_mask"]
    t = x_mask.shape[1]
    if y is None or y.ndim < 2 or y.shape[1] != t or t < 2 or x.ndim < 2 or x.shape[1] != t:
        return False

    def out_steps(steps: int):
        batch = {
            "x": jax.ShapeDtypeStruct((1, steps, *x.shape[2:]), x.dtype),
            "x_mask": jax.ShapeDtypeStruct((1, steps), x_mask.dtype),
        }
        out = jax.tree.leaves(jax.eval_shape(predict_step, state, batch))[0]
        return out.shape[1] if out.ndim >= 2 else None

    return out_steps(t) == t and out_steps(t - 1) == t - 1


def can_keep_on_device(engine, arrays: dict) -> bool:
    """True for the single-device engine and a dataset that fits `DEVICE_DATA_LIMIT`."""
    return type(engine) is LocalEngine and sum(v.nbytes for v in arrays.values()) <= (
        DEVICE_DATA_LIMIT
    )


def print_report(report, file=None):
    """Prints a pre-flight report above any progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(str(report), file=file or sys.stdout)


def check_fuse(fuse, chunk_steps, engine, arrays, buckets=None) -> None:
    """`ConfigError` for a fuse mode, chunking or bucketing that cannot run as asked.

    Options another mode would silently ignore are errors too: ``chunk_steps``
    splits a fused epoch only, ``buckets`` needs the per-step loop.
    """
    if fuse not in FUSE_MODES:
        raise ConfigError(f"fuse must be None, 'epoch' or 'run', got {fuse!r}.")
    if chunk_steps is not None and (
        isinstance(chunk_steps, bool) or not isinstance(chunk_steps, int) or chunk_steps < 1
    ):
        raise ConfigError(f"chunk_steps must be a positive int or None, got {chunk_steps!r}.")
    if chunk_steps is not None and fuse != "epoch":
        raise ConfigError(
            f"chunk_steps={chunk_steps} splits the scan of fuse='epoch'; got fuse={fuse!r}. "
            "Pass fuse='epoch' too, or drop chunk_steps."
        )
    if buckets is not None and fuse is not None:
        raise ConfigError(
            f"buckets= runs one compiled step per bucket in the per-step loop; got fuse={fuse!r}. "
            "Drop fuse= to train with buckets."
        )
    if fuse is not None and type(engine) is not LocalEngine:
        raise ConfigError(
            f"fuse={fuse!r} runs on one device (the default engine); got {type(engine).__name__}. "
            "Drop fuse= to train with this engine."
        )


class Feed:
    """What the `fit` loop iterates: units of work (a step or a chunk) and their runner.

    Args:
      arrays: the training arrays (as `jaxnets.training.inputs.as_arrays` returns).
      batch_size, shuffle_seed: as in `iterate_batches`.
      engine: the engine; the dataset stays on the device for the single-device one.
      fuse: None (one step per unit) or ``"epoch"`` (one `lax.scan` per unit).
      chunk_steps: steps per unit with ``fuse="epoch"`` (default: the whole epoch).
      verbose: at >= 1 the pre-flight report is printed when the step compiles.
      buckets: bucket boundaries for variable-length rows (lengths from
        ``x_mask``): batches of one bucket, cut to its length; one compile each.
        Per-step targets ``y`` ``(n, T, ...)`` of a model with one output per
        step are cut with them (`per_step_targets`).
      state: the `TrainState` to train (with ``buckets``: to tell per-step
        targets from per-row ones).
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
        state=None,
    ):
        check_fuse(fuse, chunk_steps, engine, arrays)
        self.arrays, self.batch_size, self.shuffle_seed = arrays, batch_size, shuffle_seed
        self.engine, self.fuse = engine, fuse
        self.n = len(arrays["x"])
        self.pad_row = padding_row(arrays) if self.n % batch_size else 0
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
            self.lengths = mask_extents(arrays["x_mask"])  # keeps front-padded rows whole
            groups = bucket_by_length(self.lengths, buckets)
            self.steps = sum(math.ceil(len(ix) / batch_size) for ix in groups.values())
            self.seq_keys = ("x", "x_mask")
            if state is not None and per_step_targets(state, arrays):
                self.seq_keys += ("y",)  # cut with x, else their lengths disagree
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
            # Called once per step (or per short chunk): worth keeping its memory mapped.
            reuse_memory=not fuse or self.chunk < self.steps,
            tune_dots=True,
            dots_proxy=self._per_step_program if fuse else None,
        )
        self.report = report

    def replace_data(self, arrays) -> None:
        """Trains the next epochs on ``arrays``: new rows of the same shapes and dtypes.

        For data drawn afresh every epoch (a generator of augmented batches):
        the programs stay the same, since only their data argument changes.
        Raises `DataError` naming the entry whose shape or dtype changed.
        """
        old = {k: f"{tuple(np.shape(v))} {np.asarray(v).dtype}" for k, v in self.arrays.items()}
        new = {k: f"{tuple(np.shape(v))} {np.asarray(v).dtype}" for k, v in arrays.items()}
        if old != new:
            diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            raise DataError(
                "each epoch's data must match the first epoch's entries, shapes and dtypes; "
                + "; ".join(f"{k}: {old.get(k)} then {new.get(k)}" for k in diff)
                + "."
            )
        self.arrays = arrays
        self.pad_row = padding_row(arrays) if self.n % self.batch_size else 0
        if self.device:
            self.data = self.engine.place_state(arrays)

    def starts_at(self, start: int) -> None:
        """Plans the compile of a shorter first chunk when the run resumes at step ``start``.

        Without ``chunk_steps`` an epoch is one chunk, so a run continued
        mid-epoch (``initial_step``) first runs a shorter one: a planned
        compile, not a retrace to warn about.
        """
        if self.fuse and start % self.chunk and self.chunk == self.steps:
            self.runner.expected_variants = max(self.runner.expected_variants, 2)

    def _per_step_program(self, args):
        """The per-step program of a fused chunk's arguments: the chunk's dots are timed on it.

        It is the program the per-step loop runs (a whole epoch's plan, whatever
        the chunk's length), so every chunk length shares one decision with it.
        """
        state, sums, data, _ = args
        plan = self.engine.place_state(
            epoch_plan(self.n, self.batch_size, self.shuffle_seed, 0, self.pad_row)
        )
        step_args = (state, sums, data, plan, np.int32(0))
        traced = self.engine.compile(train_indexed, donate_argnums=(0, 1)).trace(*step_args)
        return traced, cpu_memory.compiler_options(traced.jaxpr), step_args

    def epoch(self, epoch: int, start: int = 0):
        """Yields ``(i, unit)``: ``i`` the index of the last step the unit runs."""
        if self.lengths is not None:
            batches = iterate_bucketed(
                self.arrays, self.lengths, self.buckets, self.batch_size,
                shuffle_seed=self.shuffle_seed, epoch=epoch, start_step=start,
                seq_keys=self.seq_keys,
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
        plan = epoch_plan(self.n, self.batch_size, self.shuffle_seed, epoch, self.pad_row)
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
                zeros = zero_sums(state, self.data, plan)
            else:
                zeros = sums_like(state, unit[0])
            self._zeros = zeros
            self.report.params = compile_lib.param_count(state.params)
        # New host arrays each time: the step donates the device buffers, and a
        # transfer (unlike `jnp.copy`) compiles nothing.
        return self.engine.place_state(jax.tree.map(np.zeros_like, self._zeros))

    def step(self, state, sums, unit):
        """Runs one unit; returns ``(state, sums)``."""
        return self.runner(state, sums, *unit)

    def log_due(self, i: int, log_every: int) -> bool:
        """Whether the loop should fetch metrics after the unit ending at step ``i``."""
        return bool(self.fuse) or (i + 1) % log_every == 0


def fit_run(state, arrays, **kwargs):
    """``fit(..., fuse="run")``: the whole run as one dispatch; see `jaxnets.training.fused_run`."""
    from jaxnets.training.fused_run import fit_run as run

    return run(state, arrays, **kwargs)
