"""`evaluate` and `predict`: host loops over the pure evaluation and prediction steps.

Batches come from `jaxnets.data.iterate_batches` (fixed size, the last one
padded and masked, so one compilation serves all of them), steps are compiled
by an engine (`jaxnets.training.engine`), and results stay on the device until
the end.

Example:
  >>> import numpy as np, flax.linen as nn
  >>> from jaxnets.training import create_train_state
  >>> state = create_train_state(nn.Dense(2), "sgd", np.zeros((1, 3), np.float32))
  >>> x, y = np.ones((5, 3), np.float32), np.zeros(5, np.int32)
  >>> predict(state, x, batch_size=2).shape, sorted(evaluate(state, (x, y), batch_size=2))
  ((5, 2), ['accuracy', 'loss'])
"""

from __future__ import annotations

import jax
import numpy as np

from jaxnets import metrics as metrics_lib
from jaxnets import validation
from jaxnets.data.batching import iterate_batches
from jaxnets.training import fused
from jaxnets.training.engine import default_engine
from jaxnets.training.inputs import as_arrays, check_positive_int
from jaxnets.training.state import TrainState
from jaxnets.training.step import eval_step, predict_step


def eval_and_accumulate(state: TrainState, sums: dict, batch: dict):
    """`eval_step` plus adding its metric sums to a running total."""
    return metrics_lib.merge(sums, eval_step(state, batch))


def scalar_logs(logs: dict) -> dict:
    """The float entries of ``logs`` (per-class metrics, arrays, are left out)."""
    return {k: v for k, v in logs.items() if isinstance(v, float)}


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
    check_positive_int("batch_size", batch_size)
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
        print(" - ".join(f"{k}: {v:.4f}" for k, v in scalar_logs(logs).items()))
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
    check_positive_int("batch_size", batch_size)
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
