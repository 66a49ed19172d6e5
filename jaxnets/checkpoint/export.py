"""Export a model's inference function with ``jax.export``; run it without the model's code.

`export` writes a folder:

- ``function.stablehlo``: the serialized ``jax.export.Exported`` of
  ``f(variables, x) = apply_fn(variables, x, train=False)``, with a symbolic
  batch dimension ``b`` so one file serves every batch size;
- ``variables.npz``: the variables (``params``, BatchNorm statistics...) as
  plain arrays in the function's argument order (read with
  ``allow_pickle=False``: loading never runs code);
- ``signature.json``: input and output shapes and dtypes, for people and tools.

`load_exported` needs only JAX and numpy: no Flax, no jaxnets model classes.

Example:
  >>> import tempfile, numpy as np, jax.numpy as jnp, flax.linen as nn
  >>> from jaxnets.training import create_train_state
  >>> state = create_train_state(nn.Dense(2), "sgd", jnp.zeros((1, 3)), learning_rate=0.1)
  >>> tmp = tempfile.TemporaryDirectory()
  >>> path = export(state, tmp.name, np.zeros((1, 3), np.float32))
  >>> f = load_exported(path)
  >>> [f(np.ones((n, 3), np.float32)).shape for n in (1, 5)]
  [(1, 2), (5, 2)]
  >>> tmp.cleanup()
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.errors import CheckpointError, ConfigError

FUNCTION_FILE = "function.stablehlo"
VARIABLES_FILE = "variables.npz"
SIGNATURE_FILE = "signature.json"


def _inference_fn(state_or_model, variables):
    """``(fn(variables, x), variables)`` for a TrainState or a Linen module."""
    from jaxnets.training.state import accepted_call_kwargs, mode_kwargs

    if hasattr(state_or_model, "apply_fn") and hasattr(state_or_model, "params"):
        state = state_or_model
        kwargs = mode_kwargs(state.call_kwargs, train=False)
        return (lambda v, x: state.apply_fn(v, x, **kwargs)), (
            variables or {"params": state.params, **state.model_state}
        )
    if hasattr(state_or_model, "apply"):
        if variables is None:
            raise ConfigError(
                "exporting a module needs its variables: export(model, path, x, variables=...)."
            )
        kwargs = mode_kwargs(accepted_call_kwargs(state_or_model), train=False)
        return (lambda v, x: state_or_model.apply(v, x, **kwargs)), variables
    raise ConfigError(
        f"export takes a TrainState or a Linen module, got {type(state_or_model).__name__}."
    )


def export(
    state_or_model,
    path,
    sample_input,
    *,
    variables=None,
    batch_polymorphic: bool = True,
    platforms: tuple[str, ...] | None = None,
) -> Path:
    """Writes the inference function of a model (see the module docstring) to ``path``.

    Args:
      state_or_model: a `TrainState`, or a Linen module with ``variables``.
      path: the folder to write (created; existing files are replaced).
      sample_input: an input batch; only its shape (after the batch axis) and dtype matter.
      variables: the module's variables when ``state_or_model`` is a module.
      batch_polymorphic: export the batch axis as the symbolic dimension ``b``
        (``jax.export.symbolic_shape("b, ...")``); else the sample's exact shape.
      platforms: lowering platforms, e.g. ``("cpu", "cuda")``; default the current backend.

    Returns:
      ``path`` as a `Path`.

    Example:
      >>> import json, tempfile, numpy as np, jax.numpy as jnp, flax.linen as nn
      >>> from jaxnets.checkpoint import export
      >>> from jaxnets.training import create_train_state
      >>> state = create_train_state(nn.Dense(2), "sgd", jnp.zeros((1, 3)), learning_rate=0.1)
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     path = export(state, tmp, np.zeros((1, 3), np.float32))
      ...     print(sorted(p.name for p in path.iterdir()))
      ...     print(json.loads((path / "signature.json").read_text())["input"])
      ['function.stablehlo', 'signature.json', 'variables.npz']
      {'shape': ['b', '3'], 'dtype': 'float32'}
    """
    fn, variables = _inference_fn(state_or_model, variables)
    sample = np.asarray(sample_input)
    if sample.ndim == 0:
        raise ConfigError("sample_input needs a batch axis, e.g. x[:1].")
    leaves, treedef = jax.tree.flatten(variables)
    leaves = [np.asarray(jax.device_get(x)) for x in leaves]
    if batch_polymorphic:
        dims = ", ".join(["b", *(str(d) for d in sample.shape[1:])])
        shape = jax.export.symbolic_shape(dims)
    else:
        shape = sample.shape
    x_spec = jax.ShapeDtypeStruct(shape, sample.dtype)
    leaf_specs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves]
    flat_fn = lambda flat, x: fn(jax.tree.unflatten(treedef, flat), x)
    exported = jax.export.export(jax.jit(flat_fn), platforms=platforms)(leaf_specs, x_spec)
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    (out / FUNCTION_FILE).write_bytes(exported.serialize())
    np.savez(out / VARIABLES_FILE, **{f"v{i}": x for i, x in enumerate(leaves)})
    signature = {
        "format": "jaxnets.export/1",
        "input": {"shape": [str(d) for d in shape], "dtype": sample.dtype.name},
        "outputs": [
            {"shape": [str(d) for d in a.shape], "dtype": np.dtype(a.dtype).name}
            for a in exported.out_avals
        ],
        "platforms": list(exported.platforms),
        "num_variables": len(leaves),
    }
    (out / SIGNATURE_FILE).write_text(json.dumps(signature, indent=1))
    return out


class ExportedModel:
    """A loaded export: call it on a batch; ``.exported`` is the ``jax.export.Exported``.

    Usually built by `load_exported`; calling it runs ``exported.call(variables, x)``
    under ``jax.jit`` (one compilation per input shape).

    Args:
      exported: the deserialized ``jax.export.Exported`` inference function.
      variables: the model's variables as a flat list of arrays, in the
        function's argument order (as stored in ``variables.npz``); they are
        moved to the default device once, here.

    Example:
      >>> import tempfile, numpy as np, jax.numpy as jnp, flax.linen as nn
      >>> from jaxnets.checkpoint import export, load_exported
      >>> from jaxnets.training import create_train_state
      >>> model = nn.Dense(2, kernel_init=nn.initializers.ones)  # bias starts at 0
      >>> state = create_train_state(model, "sgd", jnp.zeros((1, 3)), learning_rate=0.1)
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     loaded = load_exported(export(state, tmp, np.zeros((1, 3), np.float32)))
      >>> loaded(np.ones((2, 3), np.float32)).tolist()  # each output sums the 3 inputs
      [[3.0, 3.0], [3.0, 3.0]]
      >>> [str(d) for d in loaded.exported.out_avals[0].shape]
      ['b', '2']
    """

    def __init__(self, exported: jax.export.Exported, variables: list[np.ndarray]):
        self.exported = exported
        self.variables = [jnp.asarray(x) for x in variables]
        self._call = jax.jit(exported.call)

    def __call__(self, x):
        return self._call(self.variables, jnp.asarray(x))


def load_exported(path) -> ExportedModel:
    """Loads a folder written by `export` as a callable (JAX and numpy only).

    Args:
      path: the folder written by `export` (a ``str`` or `Path`), holding
        ``function.stablehlo`` and ``variables.npz``; ``signature.json`` is not read.

    Returns:
      An `ExportedModel`: call it on an input batch to get the model's outputs.

    Raises:
      CheckpointError: files missing or unreadable.

    Example:
      >>> import tempfile, numpy as np, jax.numpy as jnp, flax.linen as nn
      >>> from jaxnets.checkpoint import export, load_exported
      >>> from jaxnets.training import create_train_state
      >>> state = create_train_state(nn.Dense(2), "sgd", jnp.zeros((1, 3)), learning_rate=0.1)
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     f = load_exported(export(state, tmp, np.zeros((1, 3), np.float32)))
      >>> x = np.ones((4, 3), np.float32)
      >>> y = f(x)  # no Flax module involved
      >>> y.shape, bool(jnp.allclose(y, state.apply_fn({"params": state.params}, x)))
      ((4, 2), True)
    """
    folder = Path(path)
    try:
        exported = jax.export.deserialize(bytearray((folder / FUNCTION_FILE).read_bytes()))
        with np.load(folder / VARIABLES_FILE, allow_pickle=False) as npz:
            variables = [npz[f"v{i}"] for i in range(len(npz.files))]
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{folder} is not a readable jaxnets export: {e}") from e
    return ExportedModel(exported, variables)
