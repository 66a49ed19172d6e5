"""What the loss modules share: Keras's clip epsilon and its last-axis mean.

Both `jaxnets.losses` and `jaxnets.losses_keras` clip probabilities by the
same ``_EPS`` and reduce element-wise losses the same way (`_mean_last`), so
these live here, below both.
"""

from __future__ import annotations

# Probabilities are clipped this far from 0 and 1 before a log, as Keras does.
_EPS = 1e-7


def _mean_last(per):
    """Averages the last axis, as Keras does: `(B, K) -> (B,)`, `(B, T, K) -> (B, T)`.

    Averaging every trailing axis instead would fold the steps of a sequence
    into one number per row, where the training step can no longer leave the
    masked steps out.
    """
    return per.mean(axis=-1) if per.ndim > 1 else per
