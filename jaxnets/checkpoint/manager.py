"""`CheckpointManager`: save and restore a whole training run with Orbax.

One checkpoint holds everything a run needs to continue exactly: the
`TrainState` leaves (params, model state, optimizer state, step, PRNG key data,
skip counter), the running metric sums of a half-done epoch, and as JSON the
epoch and position inside it, the data order (shuffle seed, batch size, row
count), each callback's ``get_state()``, the history and a CRC32 per array.

Underneath is an Orbax ``CheckpointManager`` saving a ``Composite`` of a
``StandardSave`` (the arrays) and a ``JsonSave`` (the rest). A step directory
appears only once fully written (Orbax writes into a ``*.orbax-checkpoint-tmp``
folder and renames it), so a crash mid-save leaves the previous steps intact.
Retention keeps the last ``keep`` steps plus the best ``keep_best`` by a
monitored metric, where NaN is never best. With ``async_save=True`` the
writing happens in the background; if it fails, the next `save`, `wait` or
`close` raises a `CheckpointError`.

Restoring (`restore`) compares the saved shapes and dtypes with the target's
*before* reading data and raises one `CheckpointError` listing every
difference. A step that cannot be read (a damaged file, a checksum that does
not match) is an error when asked for by number; when restoring the latest
step, the manager falls back to the newest readable one, warns with
`CheckpointFallbackWarning`, and (unless read-only) renames the damaged step
folder to ``<step>.corrupt`` so later saves do not collide with it.

Example:
  >>> import tempfile, jax.numpy as jnp, flax.linen as nn
  >>> from jaxnets.training import create_train_state
  >>> state = create_train_state(nn.Dense(2), "adam", jnp.zeros((1, 3)), learning_rate=0.1)
  >>> tmp = tempfile.TemporaryDirectory()
  >>> with CheckpointManager(tmp.name, keep=2) as mngr:
  ...     _ = mngr.save(state, epoch=1, history={"loss": [0.5]})
  ...     run = mngr.restore(state)
  >>> run.epoch, run.history, mngr.all_steps()
  (1, {'loss': [0.5]}, [0])
  >>> tmp.cleanup()
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from jaxnets.checkpoint import codec
from jaxnets.checkpoint.codec import RunState
from jaxnets.checkpoint.structure import check_compatible, flatten, nest, unflatten_like
from jaxnets.errors import CheckpointError, ConfigError


class CheckpointFallbackWarning(UserWarning):
    """The latest checkpoint was unreadable; an older one was restored instead."""


class _Unreadable(Exception):
    """A step exists but its files cannot be read back faithfully."""


# What restoring reads from the JSON meta file, and the type each entry must have.
_META_TYPES = {
    "epoch": int,
    "step_in_epoch": int,
    "stopped": bool,
    "data": dict,
    "history": dict,
    "callbacks": dict,
    "checksums": dict,
}


def _meta_problem(meta: dict) -> str | None:
    """What is wrong with a meta file that parsed as JSON (it may have been damaged)."""
    for key, kind in _META_TYPES.items():
        value = meta.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"entry {key!r} is {type(value).__name__}, expected {kind.__name__}"
    skipped = meta.get("skipped_at_epoch_start")  # absent in older checkpoints
    if skipped is not None and (not isinstance(skipped, int) or isinstance(skipped, bool)):
        return f"entry 'skipped_at_epoch_start' is {type(skipped).__name__}, expected int"
    try:
        for key in ("data", "history", "callbacks"):
            codec.decode_json(meta[key])
    except (TypeError, ValueError, KeyError) as e:
        return f"entry {key!r} does not decode ({type(e).__name__}: {e})"
    return None


class CheckpointManager:
    """Saves and restores whole runs in ``directory`` (one subfolder per step).

    Args:
      directory: where step folders go (created unless ``read_only``).
      keep: keep the newest ``keep`` steps (None: all).
      keep_best: also keep the ``keep_best`` best steps by ``monitor``.
      monitor: the metric (a key of the epoch logs) ranking steps; NaN ranks last.
      mode: ``"min"`` or ``"max"``: which direction of ``monitor`` is better.
      async_save: write in a background thread; errors surface on the next
        `save`, `wait` or `close`.
      read_only: never write, rename or delete (evaluation, transfer).

    Example:
      >>> import tempfile, jax.numpy as jnp, flax.linen as nn
      >>> from jaxnets.checkpoint import CheckpointManager
      >>> from jaxnets.training import create_train_state
      >>> state = create_train_state(nn.Dense(2), "sgd", jnp.zeros((1, 3)), learning_rate=0.1)
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     with CheckpointManager(tmp, keep=1, keep_best=1, monitor="val_loss") as mngr:
      ...         for n, loss in [(1, 0.5), (2, 0.2), (3, 0.4)]:
      ...             _ = mngr.save(state.replace(step=state.step + n), logs={"val_loss": loss})
      ...         print(mngr.all_steps(), mngr.best_step())  # the newest and the best
      [2, 3] 2
    """

    def __init__(
        self,
        directory,
        *,
        keep: int | None = 3,
        keep_best: int | None = None,
        monitor: str | None = "val_loss",
        mode: str = "min",
        async_save: bool = False,
        read_only: bool = False,
    ):
        for name, value in (("keep", keep), ("keep_best", keep_best)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive int or None, got {value!r}.")
        if mode not in ("min", "max"):
            raise ConfigError(f"mode must be 'min' or 'max', got {mode!r}.")
        if keep_best and monitor is None:
            raise ConfigError("keep_best needs a monitor metric, e.g. monitor='val_loss'.")
        self.directory = Path(directory).absolute()
        if read_only and not self.directory.is_dir():
            raise CheckpointError(f"no checkpoint directory at {self.directory}.")
        self.monitor, self.mode, self.read_only = monitor, mode, read_only
        rank = None if monitor is None else self._rank
        keepers = [policies.LatestN(n=keep)]
        if keep_best:
            keepers.append(
                policies.BestN(
                    get_metric_fn=rank, n=keep_best, keep_checkpoints_without_metrics=False
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(keepers),
            best_fn=rank,
            best_mode="max",  # rank is "higher is better" whatever the mode
            enable_async_checkpointing=async_save,
            # Orbax's own read_only mode logs warnings on every open; this class
            # guards writes itself, and Orbax writes nothing before a save.
            create=not read_only,
            cleanup_tmp_directories=not read_only,
        )
        registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
        for item, save, restore in (
            ("arrays", ocp.args.StandardSave, ocp.args.StandardRestore),
            ("meta", ocp.args.JsonSave, ocp.args.JsonRestore),
        ):
            registry.add(item, save)
            registry.add(item, restore)
        self._mngr = ocp.CheckpointManager(
            self.directory, options=options, handler_registry=registry
        )
        self._pending: int | None = None

    def _rank(self, metrics) -> float:
        return codec.rank_value(metrics, self.monitor, self.mode)

    # -- queries ---------------------------------------------------------------------------

    def all_steps(self) -> list[int]:
        """Steps with a complete checkpoint, oldest first."""
        return sorted(self._mngr.all_steps())

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def best_step(self) -> int | None:
        """The step with the best finite ``monitor`` value (None if there is none)."""
        best, best_rank = None, -math.inf
        for step in self.all_steps():
            rank = self._rank(self._mngr.metrics(step))
            if rank > best_rank:
                best, best_rank = step, rank
        return best

    # -- saving ----------------------------------------------------------------------------

    def save(
        self,
        state,
        *,
        epoch: int = 0,
        step_in_epoch: int = 0,
        history: dict | None = None,
        callbacks=(),
        logs: dict | None = None,
        sums=None,
        data: dict | None = None,
        stopped: bool = False,
        skipped_at_epoch_start: int | None = None,
    ) -> int:
        """Saves ``state`` and the run's position as step ``state.step``; returns the step.

        Args:
          state: the `TrainState`.
          epoch, step_in_epoch: where a resumed run continues.
          history: the finished epochs' metrics.
          callbacks: callbacks whose ``get_state()`` is saved.
          logs: the epoch's logs; ``logs[monitor]`` ranks the step for ``keep_best``.
          sums: a half-done epoch's metric sums (a pytree of arrays).
          data: the data order (seed, shuffle, batch size, row count).
          stopped: a callback stopped training.
          skipped_at_epoch_start: with a mid-epoch step, the count of skipped
            updates when that epoch began (the epoch's ``skipped`` log counts from it).
        """
        if self.read_only:
            raise CheckpointError(f"{self.directory} was opened read-only.")
        self.wait()
        step = int(state.step)
        if step in self.all_steps():
            raise CheckpointError(
                f"step {step} is already saved in {self.directory}; a run saves each step once."
            )
        leaves = codec.state_leaves(state)
        arrays = {f"state/{p}": x for p, x in codec.to_host(leaves).items()}
        if sums is not None:
            arrays.update({f"sums/{p}": x for p, x in codec.to_host(flatten(sums)).items()})
        meta = {
            "format": codec.FORMAT,
            "step": step,
            "epoch": int(epoch),
            "step_in_epoch": int(step_in_epoch),
            "stopped": bool(stopped),
            "skipped_at_epoch_start": (
                None if skipped_at_epoch_start is None else int(skipped_at_epoch_start)
            ),
            "data": codec.encode_json(data or {}, "data"),
            "history": codec.encode_json(history or {}, "history"),
            "callbacks": codec.callback_states(callbacks),
            "prng_keys": codec.key_impls(leaves),
            "checksums": codec.checksums(arrays),
        }
        value = codec.monitored_value(logs, self.monitor)
        metrics = None if self.monitor is None else ({} if value is None else {self.monitor: value})
        args = ocp.args.Composite(
            arrays=ocp.args.StandardSave(nest(arrays)), meta=ocp.args.JsonSave(meta)
        )
        try:
            self._mngr.save(step, args=args, metrics=metrics, force=True)
        except Exception as e:
            raise CheckpointError(f"saving step {step} to {self.directory} failed: {e}") from e
        self._pending = step
        return step

    def wait(self):
        """Blocks until a background save finishes; raises `CheckpointError` if it failed."""
        try:
            self._mngr.wait_until_finished()
        except Exception as e:
            step, self._pending = self._pending, None
            raise CheckpointError(
                f"the background save of step {step} to {self.directory} failed: {e!r}. "
                "That step was not committed; the earlier steps are intact."
            ) from e
        self._pending = None

    def close(self):
        """Waits for pending saves (raising their errors) and releases Orbax's resources."""
        try:
            self.wait()
        finally:
            self._mngr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- restoring -------------------------------------------------------------------------

    def restore(self, target, *, step: int | None = None, callbacks=()) -> RunState:
        """Restores a step into a copy of ``target`` (a `TrainState` built like the saved one).

        Args:
          target: supplies the static fields and the expected shapes and dtypes.
          step: a step number, or None for the newest readable step.
          callbacks: the run's callbacks; one with a ``restore_target(state,
            saved_state) -> state`` method may reshape the target first (e.g.
            `GradualUnfreezing` rebuilds the optimizer of groups it had unfrozen).

        Raises:
          CheckpointError: no checkpoint, the structure differs (listing every
            difference), or the step (or every step, for ``step=None``) is unreadable.
        """
        self.wait()
        self._mngr.reload()
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"no complete checkpoint in {self.directory}.")
        if step is not None:
            if step not in steps:
                raise CheckpointError(f"no step {step} in {self.directory}; saved steps: {steps}.")
            try:
                return self._restore_step(target, step, callbacks)
            except _Unreadable as e:
                raise CheckpointError(str(e)) from e.__cause__
        failures = []
        for candidate in reversed(steps):
            try:
                run = self._restore_step(target, candidate, callbacks)
            except _Unreadable as e:
                failures.append((candidate, e))
                continue
            if failures:
                self._fall_back(failures, candidate)
            return run
        lines = "\n".join(f"  step {s}: {e}" for s, e in failures)
        raise CheckpointError(f"no readable checkpoint in {self.directory}:\n{lines}")

    def _fall_back(self, failures, restored: int):
        moved = [] if self.read_only else [self._quarantine(s) for s, _ in failures]
        detail = "; ".join(f"step {s}: {e}" for s, e in failures)
        where = f" (moved to {', '.join(p.name for p in moved)})" if moved else ""
        warnings.warn(
            f"restored step {restored} of {self.directory} because newer steps are unreadable"
            f"{where}: {detail}",
            CheckpointFallbackWarning,
            stacklevel=3,
        )

    def _quarantine(self, step: int) -> Path:
        src = self.directory / str(step)
        dst, n = self.directory / f"{step}.corrupt", 1
        while dst.exists():
            dst, n = self.directory / f"{step}.corrupt{n}", n + 1
        src.rename(dst)
        self._mngr.reload()
        return dst

    def read(self, step: int) -> tuple[dict, dict]:
        """The raw checkpoint of ``step``: flat host arrays (``state/...``, ``sums/...``) and meta.

        Raises `CheckpointError` if the files are unreadable or fail their checksums.
        """
        try:
            meta, arrays = self._read(step)
        except _Unreadable as e:
            raise CheckpointError(str(e)) from e.__cause__
        return arrays, meta

    def _read_meta(self, step: int):
        where = f"step {step} of {self.directory}"
        try:
            meta = self._mngr.restore(
                step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            ).meta
            saved = self._mngr.item_metadata(step)["arrays"]
            saved = flatten(getattr(saved, "tree", saved))
        except Exception as e:
            raise _Unreadable(f"{where} is unreadable ({type(e).__name__}: {e})") from e
        if not isinstance(meta, dict) or meta.get("format") != codec.FORMAT:
            raise _Unreadable(f"{where} is not a {codec.FORMAT} checkpoint")
        problem = _meta_problem(meta)
        if problem:
            raise _Unreadable(f"{where} has a damaged meta file: {problem}")
        return meta, saved

    def _read(self, step: int):
        meta, _ = self._read_meta(step)
        where = f"step {step} of {self.directory}"
        try:
            args = ocp.args.Composite(arrays=ocp.args.StandardRestore())
            arrays = flatten(self._mngr.restore(step, args=args).arrays)
        except Exception as e:
            raise _Unreadable(f"{where} is unreadable ({type(e).__name__}: {e})") from e
        bad = codec.verify(arrays, meta["checksums"])
        if bad or set(arrays) != set(meta["checksums"]):
            raise _Unreadable(
                f"{where} is corrupted: checksum mismatch in {bad or 'the file list'}"
            )
        return meta, arrays

    def _restore_step(self, target, step: int, callbacks) -> RunState:
        meta, saved = self._read_meta(step)
        saved_cbs = codec.decode_json(meta["callbacks"])
        for i, cb in enumerate(callbacks or ()):
            key = codec.callback_key(i, cb)
            if key in saved_cbs and hasattr(cb, "restore_target"):
                target = cb.restore_target(target, saved_cbs[key])
        expected = codec.state_leaves(target)
        saved_state = {p[len("state/") :]: m for p, m in saved.items() if p.startswith("state/")}
        check_compatible(
            saved_state, codec.expected_specs(expected), what=f"step {step} of {self.directory}"
        )
        meta, arrays = self._read(step)
        host = {p[len("state/") :]: x for p, x in arrays.items() if p.startswith("state/")}
        fields = {name: getattr(target, name) for name in codec.STATE_FIELDS}
        state = target.replace(**unflatten_like(fields, codec.place_like(host, expected)))
        sums = {p[len("sums/") :]: x for p, x in arrays.items() if p.startswith("sums/")}
        return RunState(
            state=state,
            step=step,
            epoch=meta["epoch"],
            step_in_epoch=meta["step_in_epoch"],
            history=codec.decode_json(meta["history"]),
            callback_states=saved_cbs,
            sums=sums or None,
            data=codec.decode_json(meta["data"]),
            stopped=meta["stopped"],
            metrics=self._mngr.metrics(step) or {},
            skipped_at_epoch_start=meta.get("skipped_at_epoch_start"),
        )


def restore_state(directory, target, *, step: int | None = None):
    """Restores the `TrainState` of a checkpoint directory (read-only), e.g. for evaluation.

    Opens a read-only `CheckpointManager` (no retention, no renaming of damaged
    steps) and returns only the state of `CheckpointManager.restore`'s run.

    Args:
      directory: the checkpoint directory written by a `CheckpointManager`.
      target: a `TrainState` built like the saved one; it supplies the static
        fields and the expected shapes and dtypes.
      step: a step number, or None (default) for the newest readable step
        (falling back to older ones with a `CheckpointFallbackWarning`).

    Returns:
      The restored `TrainState`.

    Raises:
      CheckpointError: no checkpoint, a structure that differs from ``target``,
        or an unreadable step.

    Example:
      >>> import tempfile, jax.numpy as jnp, flax.linen as nn
      >>> from jaxnets.training import create_train_state
      >>> state = create_train_state(nn.Dense(2), "sgd", jnp.zeros((1, 3)), learning_rate=0.1)
      >>> tmp = tempfile.TemporaryDirectory()
      >>> path = tmp.name
      >>> with CheckpointManager(path) as mngr:
      ...     _ = mngr.save(state)
      >>> int(restore_state(path, state).step)
      0
      >>> tmp.cleanup()
    """
    with CheckpointManager(directory, read_only=True, monitor=None) as mngr:
        return mngr.restore(target, step=step).state
