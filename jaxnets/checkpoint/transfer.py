"""Load pretrained weights into another model: by path, with renaming and skipping.

`load_pretrained` copies every variable (parameters and other collections
such as BatchNorm statistics) whose path, after renaming, exists in the target
with the same shape and dtype. A new head of another size is a mismatch: an
error listing every one, or skipped and reported with ``skip_mismatch=True``.
Nothing is ever padded, truncated or cast. The optimizer state is
re-initialized for the new parameters.

Paths are ``/``-joined inside a collection, e.g. ``conv_0/kernel`` in
``params``. ``rename`` maps source prefixes to target prefixes; keys are
regular expressions matched against whole path components from the start, so
``{"encoder": "backbone"}`` renames ``encoder/conv/kernel`` but not
``encoder2/...``; replacements may use groups (``{r"block_(\\d+)": r"layer_\\1"}``)
``None`` drops the matching paths and ``""`` strips the prefix. The first
matching rule wins.

Example:
  >>> import jax.numpy as jnp, flax.linen as nn
  >>> from jaxnets.training import create_train_state
  >>> class Net(nn.Module):
  ...     classes: int
  ...     @nn.compact
  ...     def __call__(self, x):
  ...         return nn.Dense(self.classes, name="head")(nn.Dense(8, name="body")(x))
  >>> old = create_train_state(Net(5), "adam", jnp.zeros((1, 4)), learning_rate=1e-3)
  >>> new = create_train_state(Net(3), "adam", jnp.zeros((1, 4)), learning_rate=1e-3, seed=1)
  >>> new, report = load_pretrained(new, old, skip_mismatch=True)
  >>> print(report)
  loaded 2 arrays; skipped 2 mismatched: params/head/bias: saved (5,) float32, expected (3,) float32; params/head/kernel: saved (8, 5) float32, expected (8, 3) float32
  >>> bool((new.params["body"]["kernel"] == old.params["body"]["kernel"]).all())
  True
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxnets.checkpoint.manager import CheckpointManager
from jaxnets.checkpoint.resume import CHECKPOINT_DIR
from jaxnets.checkpoint.structure import SEP, describe, flatten, spec, unflatten_like
from jaxnets.errors import CheckpointError, ConfigError


@dataclasses.dataclass
class TransferReport:
    """What `load_pretrained` did, path by path (``collection/path``).

    Attributes:
      loaded: copied from the source.
      skipped: same path, other shape or dtype (``skip_mismatch=True``), as text.
      missing: in the target only; they keep their fresh initialization.
      unused: in the source only (or dropped by a ``None`` rename).

    Example:
      >>> import numpy as np, jax.numpy as jnp, flax.linen as nn
      >>> from jaxnets.checkpoint import load_pretrained
      >>> from jaxnets.training import create_train_state
      >>> state = create_train_state(nn.Dense(2), "sgd", jnp.zeros((1, 3)), learning_rate=0.1)
      >>> source = {"kernel": np.ones((3, 2), np.float32), "scale": np.ones(2, np.float32)}
      >>> _, report = load_pretrained(state, source)
      >>> report.loaded, report.missing, report.unused
      (['params/kernel'], ['params/bias'], ['params/scale'])
    """

    loaded: list[str]
    skipped: list[str]
    missing: list[str]
    unused: list[str]

    def __str__(self) -> str:
        parts = [f"loaded {len(self.loaded)} arrays"]
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)} mismatched: {'; '.join(self.skipped)}")
        if self.missing:
            parts.append(f"{len(self.missing)} kept at init: {', '.join(self.missing)}")
        if self.unused:
            parts.append(f"{len(self.unused)} unused: {', '.join(self.unused)}")
        return "; ".join(parts)


def _variables(state) -> dict:
    return {"params": state.params, **state.model_state}


# The files that mark a folder written by the Keras-style `Model.save`, `save_weights`
# or `ModelCheckpoint` (`jaxnets.keras.saving`): the variables are in ``variables/``.
_SAVED_MODEL_MARKERS = ("model.json", "weights.json")


def _read_saved_model(folder: Path) -> dict:
    """The variables of a `Model.save` / `save_weights` / `ModelCheckpoint` folder, flat."""
    import orbax.checkpoint as ocp  # imported on use: it is slow to import

    try:
        with ocp.StandardCheckpointer() as ckptr:
            variables = ckptr.restore((folder / "variables").absolute())
    except Exception as e:  # Orbax raises many types for a damaged folder
        raise CheckpointError(
            f"cannot read the saved variables in {folder / 'variables'} ({type(e).__name__}: {e})."
        ) from e
    return flatten(variables)


def read_variables(source, *, step: int | None = None) -> dict:
    """Flat ``{"collection/path": array}`` of a source: a checkpoint folder, a state or a dict.

    Args:
      source: a folder written by `CheckpointManager` or by ``fit(workdir=...)``
        (its ``checkpoints`` subfolder is used), a folder written by the Keras-style
        ``model.save``, ``model.save_weights`` or ``ModelCheckpoint``, a `TrainState`,
        a Keras-style `jaxnets.Model`, a variables dict
        (``{"params": ..., "batch_stats": ...}``) or a bare params dict.
      step: the checkpoint step (default: the newest; not for a saved model).

    Example:
      >>> import tempfile, jax.numpy as jnp, flax.linen as nn
      >>> from jaxnets.checkpoint import CheckpointManager, read_variables
      >>> from jaxnets.training import create_train_state
      >>> state = create_train_state(nn.Dense(2), "sgd", jnp.zeros((1, 3)), learning_rate=0.1)
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     with CheckpointManager(tmp) as mngr:
      ...         _ = mngr.save(state)
      ...     flat = read_variables(tmp)
      >>> {path: x.shape for path, x in sorted(flat.items())}
      {'params/bias': (2,), 'params/kernel': (3, 2)}
      >>> sorted(read_variables({"w": jnp.ones(2)}))  # a bare params dict
      ['params/w']
    """
    if isinstance(source, (str, Path)):
        folder = Path(source)
        if any((folder / m).is_file() for m in _SAVED_MODEL_MARKERS):
            if step is not None:
                raise ConfigError(f"{folder} is a saved model, not a checkpoint: it has no steps.")
            return _read_saved_model(folder)
        if (folder / CHECKPOINT_DIR).is_dir():
            folder = folder / CHECKPOINT_DIR
        with CheckpointManager(folder, read_only=True, monitor=None) as mngr:
            step = mngr.latest_step() if step is None else step
            if step is None:
                raise CheckpointError(f"no complete checkpoint in {folder}.")
            arrays, _ = mngr.read(step)
        out = {}
        for path, x in arrays.items():
            if path.startswith("state/params/"):
                out["params/" + path[len("state/params/") :]] = x
            elif path.startswith("state/model_state/"):
                out[path[len("state/model_state/") :]] = x
        return out
    if hasattr(source, "params") and hasattr(source, "model_state"):
        return flatten(_variables(source))
    if hasattr(source, "get_weights") and hasattr(source, "_variables"):  # a jaxnets.Model
        return flatten(source._variables())
    if isinstance(source, Mapping):
        return flatten(source if "params" in source else {"params": source})
    raise ConfigError(
        f"source must be a checkpoint or saved-model folder, a TrainState, a jaxnets.Model "
        f"or a dict of arrays, got {type(source).__name__}."
    )


def _rules(rename) -> list[tuple[re.Pattern, str | None]]:
    if rename is None:
        return []
    items = rename.items() if isinstance(rename, Mapping) else rename
    try:
        return [(re.compile(f"(?:{pattern})(?={SEP}|$)"), repl) for pattern, repl in items]
    except re.error as e:
        raise ConfigError(f"invalid rename pattern: {e}") from e


def rename_path(path: str, rules) -> str | None:
    """Applies the first matching rule to a ``collection/path`` (the collection is kept).

    Example:
      >>> rename_path("params/encoder/conv/kernel", _rules({"encoder": "backbone"}))
      'params/backbone/conv/kernel'
    """
    collection, _, inner = path.partition(SEP)
    for pattern, repl in rules:
        m = pattern.match(inner)
        if m:
            if repl is None:
                return None
            head, rest = m.expand(repl), inner[m.end() :]
            # An empty replacement removes the prefix and its separator.
            return f"{collection}{SEP}{head + rest if head else rest.lstrip(SEP)}"
    return path


def _private_copy(x) -> jax.Array:
    """A device array that shares no buffer with ``x``.

    ``fit`` donates the state it trains: had the new state aliased a source
    `TrainState`'s arrays, training it would delete the source model's.
    """
    if isinstance(x, jax.Array):
        return jnp.array(x, copy=True)
    return jax.device_put(x)


def load_pretrained(
    state,
    source,
    *,
    rename=None,
    skip_mismatch: bool = False,
    step: int | None = None,
):
    """Copies matching pretrained variables from ``source`` into ``state``.

    Args:
      state: the target `TrainState` (its model may differ, e.g. a new head).
      source: see `read_variables`.
      rename: ``{source_regex: target_prefix}`` (or a list of pairs), applied to
        source paths inside each collection; ``None`` drops a path.
      skip_mismatch: skip (and report) paths whose shape or dtype differ instead
        of raising.
      step: the checkpoint step for a folder source.

    Returns:
      ``(state, report)``: the state with the loaded arrays and a fresh optimizer
      state, and a `TransferReport`.

    Raises:
      CheckpointError: no path matches (the message shows both sides' paths), every
        shared path differs in shape or dtype (listed, even with ``skip_mismatch``),
        two source paths rename to one target, or shapes/dtypes differ without
        ``skip_mismatch``.

    Example:
      >>> import numpy as np, jax.numpy as jnp, flax.linen as nn
      >>> from jaxnets.checkpoint import load_pretrained
      >>> from jaxnets.training import create_train_state
      >>> state = create_train_state(nn.Dense(2), "sgd", jnp.zeros((1, 3)), learning_rate=0.1)
      >>> encoder = {"kernel": np.ones((3, 2), np.float32), "bias": np.zeros(2, np.float32)}
      >>> state, report = load_pretrained(state, {"encoder": encoder}, rename={"encoder": ""})
      >>> print(report)
      loaded 2 arrays
      >>> float(state.params["kernel"].sum())
      6.0
    """
    rules = _rules(rename)
    renamed, unused = {}, []
    for path, x in read_variables(source, step=step).items():
        new = rename_path(path, rules)
        if new is None:
            unused.append(path)
            continue
        if new in renamed:
            raise CheckpointError(f"two source paths rename to {new!r}; make the rules distinct.")
        renamed[new] = (path, x)
    target = flatten(_variables(state))
    report = TransferReport([], [], sorted(set(target) - set(renamed)), [])
    report.unused = sorted(unused + [renamed[p][0] for p in set(renamed) - set(target)])
    values = dict(target)
    for path in sorted(set(target) & set(renamed)):
        source_path, x = renamed[path]
        if spec(x) != spec(target[path]):
            report.skipped.append(f"{path}: saved {describe(x)}, expected {describe(target[path])}")
            continue
        values[path] = _private_copy(x)
        report.loaded.append(path)
    lines = "\n  ".join(report.skipped)
    if not report.loaded and report.skipped:
        # The paths match; the shapes do not (a model of other widths, say): the paths
        # themselves would not show what is wrong.
        raise CheckpointError(
            f"no pretrained array fits the model: every one of the {len(report.skipped)} "
            f"paths they share differs in shape or dtype:\n  {lines}\n"
            "Build the model with the pretrained one's widths (only a new head may differ)."
        )
    if not report.loaded:
        raise CheckpointError(
            "no pretrained path matches the model. Source paths: "
            f"{sorted(renamed)[:5]}...; target paths: {sorted(target)[:5]}...; "
            "map them with rename={'source_prefix': 'target_prefix'}."
        )
    if report.skipped and not skip_mismatch:
        raise CheckpointError(
            f"{len(report.skipped)} pretrained arrays do not fit the model:\n  {lines}\n"
            "Pass skip_mismatch=True to keep those at their initialization."
        )
    variables = unflatten_like(_variables(state), values)
    params = variables.pop("params")
    new_state = state.replace(params=params, model_state=variables)
    return new_state.replace(opt_state=state.tx.init(params)), report
