"""Checkpoints of whole runs, transfer learning and export.

- `CheckpointManager` (Orbax underneath) saves and restores a whole run: state,
  position in the data, callback state and history; ``fit(..., workdir=...)``
  uses it to resume exactly (`jaxnets.checkpoint.resume`).
- `load_pretrained` copies matching weights into another model; `freeze_params`,
  `masked_optimizer` and `GradualUnfreezing` freeze and unfreeze parameter groups.
- `export` / `load_exported` write and run the inference function without the
  model's Python code (``jax.export``).

The names below are imported from their submodules on first use, so importing
one part (say `jaxnets.checkpoint.freezing`) does not load Orbax. The export
functions are bound eagerly (a light module): ``export`` is also the name of
its submodule, and importing that submodule later must not rebind it.

Example:
  >>> import jaxnets.checkpoint as ckpt
  >>> ckpt.freeze_params.__module__
  'jaxnets.checkpoint.freezing'
"""

import importlib

from jaxnets.checkpoint.export import ExportedModel, export, load_exported

_EXPORTS = {
    "CheckpointFallbackWarning": "manager",
    "CheckpointManager": "manager",
    "GradualUnfreezing": "freezing",
    "RunState": "manager",
    "TransferReport": "transfer",
    "check_compatible": "structure",
    "freeze_params": "freezing",
    "frozen": "freezing",
    "load_pretrained": "transfer",
    "masked_optimizer": "freezing",
    "param_labels": "freezing",
    "read_variables": "transfer",
    "restore_state": "manager",
}

__all__ = [
    "CheckpointFallbackWarning",
    "CheckpointManager",
    "ExportedModel",
    "GradualUnfreezing",
    "RunState",
    "TransferReport",
    "check_compatible",
    "export",
    "freeze_params",
    "frozen",
    "load_exported",
    "load_pretrained",
    "masked_optimizer",
    "param_labels",
    "read_variables",
    "restore_state",
]


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jaxnets.checkpoint' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"jaxnets.checkpoint.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted([*globals(), *__all__])
