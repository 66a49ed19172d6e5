"""Shared pieces of the callbacks that watch a logged quantity or touch the state.

``mode='auto'`` follows Keras: ``loss`` (and ``val_loss``) is minimised, and a
metric is maximised or minimised according to its direction. Keras asks the
metric object; jaxnets metrics are looked up by name, so the direction comes
from the name (accuracies, AUC, precision, recall and F1 go up; errors and
losses go down). Anything else needs an explicit ``mode``.

Callbacks read and change only ``self.model.state`` (a
`jaxnets.training.TrainState`), so they work the same under ``Model.fit`` and
the functional `jaxnets.training.fit`.

Example:
  >>> resolve_mode("val_accuracy", "auto"), resolve_mode("val_loss", "auto")
  ('max', 'min')
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxnets import optim
from jaxnets.errors import ConfigError

_UP = ("acc", "auc", "precision", "recall", "f1", "iou", "r2")
_DOWN = ("loss", "error", "mse", "mae", "crossentropy", "hinge")


def metric_direction(monitor: str) -> str | None:
    """``'max'``, ``'min'`` or None (unknown) for a logged name such as ``val_accuracy``."""
    name = monitor.removeprefix("val_")
    if name == "loss":
        return "min"
    if any(w in name for w in _UP):
        return "max"
    if any(w in name for w in _DOWN):
        return "min"
    return None


def resolve_mode(monitor: str, mode: str, who: str = "callback") -> str:
    """``'min'`` or ``'max'`` for ``mode`` in {'auto', 'min', 'max'}.

    Args:
      monitor: the logged name, e.g. ``"val_mse"``; ``mode="auto"`` reads its direction.
      mode: ``"auto"``, ``"min"`` or ``"max"``.
      who: the caller, named in the error when the direction cannot be told.

    Example:
      >>> resolve_mode("val_mse", "auto"), resolve_mode("val_accuracy", "auto")
      ('min', 'max')
    """
    if mode not in ("auto", "min", "max"):
        raise ConfigError(f"{who} mode must be 'auto', 'min' or 'max', got {mode!r}.")
    if mode != "auto":
        return mode
    direction = metric_direction(monitor)
    if direction is None:
        raise ConfigError(
            f"{who} received monitor={monitor!r} and cannot tell whether it should be "
            "maximized or minimized; pass mode='max' or mode='min'."
        )
    return direction


def snapshot(state):
    """A device-side copy of the variables (the step donates its input buffers)."""
    return jax.tree.map(jnp.copy, (state.params, state.model_state))


def restore(model, snap):
    """Puts variables taken with `snapshot` back into ``model.state``.

    Host arrays (a snapshot restored from a checkpoint) are placed with each
    current variable's dtype and sharding, so a multi-device state stays so.
    """
    current = (model.state.params, model.state.model_state)
    params, model_state = jax.tree.map(
        lambda saved, now: jax.device_put(jnp.asarray(saved, now.dtype), now.sharding),
        tuple(snap),
        current,
    )
    model.state = model.state.replace(params=params, model_state=model_state)


def get_lr(model) -> float:
    """The learning rate held in the optimizer state of ``model.state``."""
    return float(optim.get_hyperparam(model.state.opt_state, "learning_rate"))


def current_lr(model) -> float:
    """The rate the last step used (with a schedule, the peak times its factor), for logs."""
    return float(optim.current_learning_rate(model.state.opt_state))


def set_lr(model, value: float):
    """Replaces the learning rate in the optimizer state (same dtype: no recompile)."""
    s = model.state
    model.state = s.replace(opt_state=optim.set_hyperparam(s.opt_state, "learning_rate", value))
