"""Checkpoints of whole runs, transfer learning and export.

- `CheckpointManager` (Orbax underneath) saves and restores a whole run: state,
  position in the data, callback state and history; ``fit(..., workdir=...)``
  uses it to resume exactly (`jaxnets.checkpoint.resume`).
- `load_pretrained` copies matching weights into another model; `freeze_params`,
  `masked_optimizer` and `GradualUnfreezing` freeze and unfreeze parameter groups.
- `export` / `load_exported` write and run the inference function without the
  model's Python code (``jax.export``).
"""

from jaxnets.checkpoint.export import ExportedModel, export, load_exported
from jaxnets.checkpoint.freezing import (
    GradualUnfreezing,
    freeze_params,
    frozen,
    masked_optimizer,
    param_labels,
)
from jaxnets.checkpoint.manager import (
    CheckpointFallbackWarning,
    CheckpointManager,
    RunState,
    restore_state,
)
from jaxnets.checkpoint.structure import check_compatible
from jaxnets.checkpoint.transfer import TransferReport, load_pretrained, read_variables

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
