"""`FitCheckpointer`: what ``fit(..., workdir=...)`` does with checkpoints.

``fit`` asks it to resume (restore the newest complete step of
``<workdir>/checkpoints`` if there is one), tells it after every step and every
epoch, and it saves when due:

- ``save_every="epoch"``: after each epoch's callbacks;
- ``save_every=k``: whenever ``state.step`` reaches a multiple of ``k``,
  mid-epoch included (with the epoch's running metric sums); with
  ``fit(fuse="epoch", chunk_steps=c)`` at the end of the chunk that passed it.
  A multiple that falls on an epoch's last batch is saved after that epoch's
  validation and callbacks instead, so a resumed run never repeats an epoch end;
- always after the last epoch and when a callback stops training.

The step count is tracked on the host, so deciding costs no device sync.
Because the batch order of epoch ``e`` depends only on ``(seed, e)`` and each
step's randomness only on ``(state.rng, state.step)``, a run killed at any step
and resumed ends with bitwise the same parameters as one never interrupted.
"""

from __future__ import annotations

from pathlib import Path

from jaxnets.checkpoint import codec
from jaxnets.checkpoint.manager import CheckpointManager, RunState
from jaxnets.checkpoint.structure import flatten, unflatten_like
from jaxnets.errors import CheckpointError, ConfigError

CHECKPOINT_DIR = "checkpoints"


def check_save_every(save_every):
    """``"epoch"`` or a positive int; raises `ConfigError` otherwise."""
    if save_every == "epoch":
        return
    if isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1:
        raise ConfigError(
            f"save_every must be 'epoch' or a positive number of steps, got {save_every!r}."
        )


class FitCheckpointer:
    """Saves and resumes one ``fit`` call in ``<workdir>/checkpoints``.

    Args:
      workdir: the run's folder.
      save_every: ``"epoch"`` or a number of steps.
      keep: how many recent steps to keep.
      data: the data order: ``seed``, ``shuffle``, ``batch_size``, ``num_examples``;
        a resumed run must use the same, or the batches would differ.
      verbose: print a line when resuming.
    """

    def __init__(self, workdir, *, save_every="epoch", keep: int | None = 3, data: dict, verbose=0):
        check_save_every(save_every)
        self.save_every = save_every
        self.data = dict(data)
        self.verbose = verbose
        self.manager = CheckpointManager(Path(workdir) / CHECKPOINT_DIR, keep=keep, monitor=None)
        self.run: RunState | None = None
        self.host_step = 0
        self.position = 0  # steps done in the current epoch
        self.deferred = False  # a save fell due on an epoch's last step
        self.last_saved: int | None = None
        self.skipped_at_epoch_start = 0  # skipped updates when the current epoch began
        self._resumed_skipped: int | None = None

    def resume(self, state, callbacks, initial_epoch: int, initial_step: int, history):
        """Returns ``(state, initial_epoch, initial_step, history)``, from the checkpoint if any.

        A checkpoint takes precedence over the ``initial_*`` and ``history`` arguments.
        A run a callback had stopped resumes as finished (``initial_epoch`` past the end).
        """
        if self.manager.latest_step() is not None:
            run = self.manager.restore(state, callbacks=callbacks)
            self._check_data(run)
            self.run, self.last_saved = run, run.step
            state, initial_epoch, initial_step = run.state, run.epoch, run.step_in_epoch
            history = run.history
            if run.step_in_epoch:
                self._resumed_skipped = run.skipped_at_epoch_start
            if run.stopped:
                initial_epoch = 2**31 - 1
            if self.verbose:
                where = f"after epoch {run.epoch}"
                if run.step_in_epoch:
                    where = f"epoch {run.epoch + 1}, batch {run.step_in_epoch}"
                print(f"resuming from {self.manager.directory} step {run.step} ({where})")
        self.host_step, self.position = int(state.step), initial_step
        return state, initial_epoch, initial_step, history

    def _check_data(self, run: RunState):
        diffs = {k: (run.data[k], v) for k, v in self.data.items() if run.data.get(k, v) != v}
        if diffs:
            text = ", ".join(f"{k}={old!r} (now {new!r})" for k, (old, new) in diffs.items())
            raise CheckpointError(
                f"{self.manager.directory} holds a run with {text}; resuming it exactly needs "
                "the same data order. Pass the saved values or use a new workdir."
            )

    def apply_callback_states(self, callbacks):
        """Restores callback state; call after ``on_train_begin`` (which may reset it)."""
        if self.run is not None:
            self.run.apply_callback_states(callbacks)

    def epoch_begin(self, skipped: int) -> int:
        """The count of skipped updates at the start of the epoch beginning now.

        ``skipped`` is the count now; an epoch resumed mid-way began before the
        checkpoint, so the count saved then is returned instead, and the
        resumed epoch's ``skipped`` log counts its first part too.

        Example:
          >>> import tempfile
          >>> with tempfile.TemporaryDirectory() as tmp:
          ...     ckpt = FitCheckpointer(tmp, data={})
          ...     ckpt.epoch_begin(3)
          ...     ckpt.close()
          3
        """
        saved, self._resumed_skipped = self._resumed_skipped, None
        self.skipped_at_epoch_start = skipped if saved is None else saved
        return self.skipped_at_epoch_start

    def initial_sums(self, zeros):
        """The resumed epoch's running metric sums shaped like ``zeros`` (once), else None."""
        run, self.run = self.run, None
        if run is None or run.sums is None:
            return None
        return unflatten_like(zeros, codec.place_like(run.sums, flatten(zeros)))

    def after_step(self, state, sums, *, epoch, step_in_epoch, steps, history, callbacks):
        """Notes the steps done (one, or a fused chunk); saves once a multiple of ``save_every``
        is reached or passed (with ``fit(fuse="epoch")`` at the end of that chunk)."""
        self.run = None
        before = self.host_step
        self.host_step += step_in_epoch - self.position
        self.position = step_in_epoch
        if (
            self.save_every == "epoch"
            or before // self.save_every == self.host_step // self.save_every
        ):
            return
        if step_in_epoch < steps:
            self._save(state, epoch, step_in_epoch, history, callbacks, sums=sums)
        else:
            self.deferred = True

    def after_epoch(self, state, *, epoch, history, callbacks, logs, last: bool, stopped: bool):
        """Saves after an epoch's callbacks when due, at the end and when stopped."""
        self.position = 0
        if self.save_every == "epoch" or self.deferred or last or stopped:
            self._save(state, epoch + 1, 0, history, callbacks, logs=logs, stopped=stopped)
        self.deferred = False

    def _save(
        self, state, epoch, step_in_epoch, history, callbacks, sums=None, logs=None, stopped=False
    ):
        if self.last_saved == self.host_step:
            return
        self.manager.save(
            state,
            epoch=epoch,
            step_in_epoch=step_in_epoch,
            history=history,
            callbacks=callbacks,
            logs=logs,
            sums=sums,
            data=self.data,
            stopped=stopped,
            skipped_at_epoch_start=self.skipped_at_epoch_start if step_in_epoch else None,
        )
        self.last_saved = self.host_step

    def close(self):
        self.manager.close()
