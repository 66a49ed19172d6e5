"""A progress display that never makes the accelerator wait.

The loop hands it host numbers it already fetched (every ``log_every`` steps
and at epoch ends); it never touches device arrays itself. ``tqdm.auto``
renders a widget in notebooks and a text bar in terminals.
"""

from __future__ import annotations

import sys
import time


def _fmt(logs: dict) -> str:
    return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items() if isinstance(v, float))


class ProgressBar:
    """Per-epoch progress: a bar at ``verbose=1``, one line per epoch at ``verbose=2``."""

    def __init__(self, verbose: int | str = 1, epochs: int = 1, steps: int = 0, file=None):
        self.verbose = 1 if verbose == "auto" else int(verbose)
        self.epochs, self.steps = epochs, steps
        self.file = file or sys.stdout
        self._bar = None
        self._start = 0.0

    def epoch_begin(self, epoch: int, initial: int = 0):
        self._start = time.perf_counter()
        if self.verbose == 1:
            from tqdm.auto import tqdm  # only bars need it (it also probes for Jupyter)

            self._bar = tqdm(
                total=self.steps,
                initial=initial,
                desc=f"Epoch {epoch + 1}/{self.epochs}",
                unit="step",
                file=self.file,
                leave=True,
                dynamic_ncols=True,
            )

    def update(self, done: int, logs: dict | None = None):
        """``done`` steps finished in this epoch; ``logs`` are host floats."""
        if self._bar is not None:
            self._bar.n = done
            if logs:
                self._bar.set_postfix_str(_fmt(logs), refresh=False)
            self._bar.refresh()

    def epoch_end(self, epoch: int, logs: dict):
        seconds = time.perf_counter() - self._start
        if self._bar is not None:
            self._bar.n = self.steps
            self._bar.set_postfix_str(_fmt(logs), refresh=False)
            self._bar.close()
            self._bar = None
        elif self.verbose == 2:
            print(
                f"Epoch {epoch + 1}/{self.epochs} - {seconds:.1f}s - {_fmt(logs)}", file=self.file
            )
