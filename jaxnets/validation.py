"""Input checks that run on the host, with numpy, before anything is traced.

`fit`, `evaluate` and `predict` call `check_inputs` first, so a bad call fails
with a `jaxnets.errors` exception that says what was expected, what came and
how to fix it, instead of a tracing error deep inside XLA or, worse, silently
wrong numbers (JAX clamps out-of-range label indices). Every check is one
vectorised pass over the arrays, once per call, never per batch.

The reference is `InputSpec`, recorded by `create_train_state` from its sample
input: the shape and dtype of one example and of the model's output for it.
Inputs of another shape (e.g. longer sequences) are accepted when the model
runs on them: one ``jax.eval_shape`` of the model on a single row decides,
and its error, with the layer it names, becomes a `ShapeError`.

Rules for dtypes: float features are cast to the model's input dtype (ints and
bools too); strings and objects are refused. Integer inputs (token ids) and
integer labels of sparse cross-entropy accept floats only when every value is
a whole number, and are then cast to int32.

Example:
  >>> import numpy as np, flax.linen as nn
  >>> from jaxnets.training import create_train_state
  >>> state = create_train_state(nn.Dense(3), "sgd", np.zeros((1, 4), np.float32))
  >>> state.input_spec
  InputSpec(shape=(4,), dtype='float32', output_shape=(3,))
  >>> check_inputs(state, {"x": np.zeros((2, 4)), "y": np.array([0, 3])})
  Traceback (most recent call last):
  ...
  jaxnets.errors.DataError: 1 of 2 rows of y have labels outside [0, 3) (first: row 1, label 3)...
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.errors import ConfigError, DataError, DTypeError, FormatError, ShapeError

# Biggest model (parameters plus one input row) a file may ask `check_model_size` to build.
MAX_MODEL_BYTES = 1 << 34


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """Shape and dtype of one example, and of the model's output for it (hashable)."""

    shape: tuple[int, ...]
    dtype: str
    output_shape: tuple[int, ...] | None = None

    @classmethod
    def of(cls, sample_input, outputs=None) -> InputSpec | None:
        """The spec of a sample batch (None for dict or scalar inputs)."""
        if getattr(sample_input, "ndim", 0) < 1 or not hasattr(sample_input, "dtype"):
            return None
        out = None
        if getattr(outputs, "ndim", 0) >= 1:
            out = tuple(int(d) for d in outputs.shape[1:])
        shape = tuple(int(d) for d in sample_input.shape[1:])
        # As JAX sees it: a float64 numpy sample is float32 unless x64 is on.
        dtype = jax.dtypes.canonicalize_dtype(sample_input.dtype)
        return cls(shape, jnp.dtype(dtype).name, out)


def _is_numeric(dtype) -> bool:
    return dtype == np.bool_ or jnp.issubdtype(dtype, jnp.number)


def _is_float(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.floating)


def _rows(mask_2d: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask_2d.reshape(len(mask_2d), -1).any(axis=1))


def to_numpy(name: str, value) -> np.ndarray:
    """``np.asarray(value)``, with a `DataError` for ragged rows."""
    try:
        return np.asarray(value)
    except ValueError as err:
        raise DataError(
            f"{name} cannot be made into one array ({err}); every row needs the same shape: "
            "pad variable-length sequences to one length and pass an x_mask."
        ) from err


def check_rows(arrays: dict) -> int:
    """The number of rows; `DataError` for scalars, unequal lengths or no rows."""
    for key, value in arrays.items():
        if np.ndim(value) == 0:
            raise ShapeError(f"{key} is a scalar; it needs one row per example along axis 0.")
    lengths = {key: len(value) for key, value in arrays.items()}
    if len(set(lengths.values())) != 1:
        got = ", ".join(f"{k} has {v}" for k, v in lengths.items())
        raise DataError(
            f"every array needs the same number of rows (one per example), but {got} "
            "rows; pass x, y (and sample weights) of equal length, e.g. slice them together."
        )
    n = next(iter(lengths.values()))
    if n == 0:
        raise DataError(
            "the dataset is empty (0 rows); check the loading or filtering that produced it."
        )
    return n


def check_finite(name: str, a: np.ndarray) -> None:
    """`DataError` naming how many rows of a float array hold NaN or Inf, and the first."""
    if not _is_float(a.dtype):
        return
    bad = _rows(~np.isfinite(a))
    if len(bad):
        raise DataError(
            f"{name} has NaN or Inf in {len(bad)} of {len(a)} rows (first: row {bad[0]}). "
            "Clean or impute them, or pass allow_nonfinite=True to let them through: the "
            "training step then skips those updates and counts them in state.skipped."
        )


def _show(value) -> int | float:
    """A label or id for a message: an int when whole (``3``, not ``3.0``), else the float."""
    value = value.item()
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _check_whole(name: str, a: np.ndarray, what: str) -> None:
    """`DTypeError` unless ``a`` holds integers, or floats that are all whole numbers."""
    if a.dtype == np.bool_ or jnp.issubdtype(a.dtype, jnp.integer):
        return
    frac = _rows(a != np.round(a))
    if len(frac):
        row = frac[0]
        raise DTypeError(
            f"{name} must hold {what}, but it is {a.dtype} with fractional values in "
            f"{len(frac)} rows (first: row {row}, {a[row].ravel()[:4].tolist()}). Pass "
            "integers (floats that are whole numbers are accepted and cast to int32)."
        )


def _whole_to_int(name: str, a: np.ndarray, what: str) -> np.ndarray:
    """Integers as int32; floats only if every value is a whole number.

    Values outside the int32 range are a `DataError`: the cast would wrap them
    (2**32 + 1 becomes 1) into ids that look valid.
    """
    _check_whole(name, a, what)
    if a.dtype == np.bool_:
        return a.astype(np.int32)
    info = np.iinfo(np.int32)
    bad = (a < info.min) | (a > info.max)  # in the array's own dtype, before any cast
    rows = _rows(bad)
    if len(rows):
        first = a[rows[0]].ravel()[np.flatnonzero(bad[rows[0]].ravel())[0]]
        raise DataError(
            f"{name} has values outside the int32 range [{info.min}, {info.max}] in "
            f"{len(rows)} of {len(a)} rows (first: row {rows[0]}, value {_show(first)}); "
            f"it must hold {what}, and these would wrap around when cast to int32. Remap "
            "them into range."
        )
    return a.astype(np.int32, copy=False)


def _probe(state, x_row, mask_row):
    """``eval_shape`` of the model on one row; the output shape, or a `ShapeError`."""
    from jaxnets.training.state import mode_kwargs  # state imports this module

    kwargs = mode_kwargs(state.call_kwargs, train=False)

    def apply(variables, x, mask):
        extra = {} if mask is None else {"mask": mask}
        return state.apply_fn(variables, x, **kwargs, **extra)

    try:
        out = jax.eval_shape(apply, state.variables, x_row, mask_row)
    except Exception as err:  # any failure of the model on this input shape
        spec = state.input_spec
        want = f"{spec.shape} ({spec.dtype})" if spec else "what the model was built for"
        layer = re.search(r'in "(/[^"]*)"', str(err))
        where = f" at layer {layer.group(1)!r}" if layer else ""
        raise ShapeError(
            f"x has per-example shape {x_row.shape[1:]} ({x_row.dtype}), but the model was "
            f"created with per-example inputs {want} and fails on it{where}: {str(err)[:300]} Reshape x "
            f"to (n, {', '.join(map(str, spec.shape)) if spec else '...'}), or create the "
            "state with a sample input of the new shape."
        ) from err
    return tuple(int(d) for d in out.shape[1:]) if hasattr(out, "shape") else None


def _check_x(state, x: np.ndarray, x_mask) -> tuple[np.ndarray, tuple | None]:
    spec = getattr(state, "input_spec", None)
    want = f"{spec.dtype} " if spec else "numeric "
    if not _is_numeric(x.dtype):
        raise DTypeError(
            f"x has dtype {x.dtype}, but the model takes {want}inputs; convert the features "
            "to numbers first (e.g. x.astype(np.float32); encode strings or categories as "
            "integers)."
        )
    if spec is not None:
        if jnp.issubdtype(spec.dtype, jnp.integer):
            x = _whole_to_int("x", x, f"integer inputs ({spec.dtype}, e.g. token ids)")
        elif _is_float(spec.dtype) and x.dtype != spec.dtype:
            x = x.astype(spec.dtype)
        if x.shape[1:] == spec.shape:
            return x, spec.output_shape
    if spec is not None and x.shape == spec.shape:
        raise ShapeError(
            f"x has shape {x.shape}, the shape of one example; add the batch axis: x[None]."
        )
    mask_row = None if x_mask is None else jnp.asarray(x_mask[:1])
    return x, _probe(state, jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype), mask_row)


def _loss_name(state) -> str:
    return getattr(state.loss, "name", "the loss")


def _check_sparse(state, y, out):
    name = _loss_name(state)
    if y.ndim >= 2 and y.shape[1:] == out and out[-1] > 1:
        raise DataError(
            f"y has shape {y.shape}, the shape of the model's outputs: one-hot or probability "
            f"targets, but {name} takes integer class ids of shape {(len(y), *out[:-1])}. Use "
            "loss='categorical_crossentropy', or pass y.argmax(-1)."
        )
    # Checked whole here, cast only after the range check below: int64 labels such as
    # 2**32 + 1 would wrap into valid-looking ids in int32.
    _check_whole("y", y, f"integer class ids for {name}")
    if y.shape[1:] == (*out[:-1], 1):
        y = y.reshape(y.shape[:-1])
    if y.shape[1:] != out[:-1]:
        raise ShapeError(
            f"y has per-example shape {y.shape[1:]}, but the model's per-example output "
            f"{out} needs integer labels of per-example shape {out[:-1]} for {name}."
        )
    classes = out[-1]
    # Every label counts, padded steps too: the loss averages over all of them.
    bad = (y < 0) | (y >= classes)
    rows = _rows(bad)
    if len(rows):
        first = _show(y[rows[0]].ravel()[np.flatnonzero(bad[rows[0]].ravel())[0]])
        raise DataError(
            f"{len(rows)} of {len(y)} rows of y have labels outside [0, {classes}) "
            f"(first: row {rows[0]}, label {first}); the model has {classes} output units "
            "and JAX would silently clamp these indices. Remap the labels to "
            f"0..{classes - 1} or build the model with num_classes >= {_show(y.max()) + 1}."
        )
    return y.astype(np.int32, copy=False)


# Where the built-in losses are defined (jaxnets.losses re-exports those of losses_keras):
# only their targets have shape rules to check.
_BUILTIN_LOSS_MODULES = ("jaxnets.losses", "jaxnets.losses_keras")


def _check_targets(state, y: np.ndarray, out) -> np.ndarray:
    loss = state.loss
    name, kind = _loss_name(state), getattr(loss, "kind", "regression")
    if not _is_numeric(y.dtype):
        fix = "np.unique(y, return_inverse=True)[1]" if kind == "sparse" else "y.astype(float)"
        raise DTypeError(f"y has dtype {y.dtype}; {name} needs numbers. Convert it, e.g. {fix}.")
    if out is None or getattr(loss.fn, "__module__", "") not in _BUILTIN_LOSS_MODULES:
        return y  # a custom loss or output structure: no shape rules to apply
    if kind == "sparse":
        return _check_sparse(state, y, out)
    if kind == "categorical" and y.shape[1:] != out:
        if y.shape[1:] == out[:-1] and not _is_float(y.dtype):
            raise DataError(
                f"y holds integer class ids of shape {y.shape}, but {name} needs one-hot "
                f"targets of shape {(len(y), *out)}. Use loss='sparse_categorical_crossentropy',"
                f" or one-hot encode y (jaxnets.data.preprocessing.one_hot(y, {out[-1]}))."
            )
        raise ShapeError(f"y has shape {y.shape}; {name} needs {(len(y), *out)}.")
    if kind in ("binary", "regression") and int(np.prod(y.shape[1:])) != int(np.prod(out)):
        raise ShapeError(
            f"y has per-example shape {y.shape[1:]} but the model outputs {out} per example; "
            f"{name} compares them element by element, so they need the same size."
        )
    if kind == "binary" and ((y < 0) | (y > 1)).any():
        raise DataError(
            f"{name} needs targets in [0, 1], got values in [{y.min()}, {y.max()}]; for "
            "more than two classes use sparse_categorical_crossentropy."
        )
    return y


def check_inputs(
    state, arrays: dict, *, targets: bool = True, allow_nonfinite: bool = False
) -> dict:
    """Checks (and casts) the arrays of `fit`/`evaluate` (``targets=True``) or `predict`.

    Args:
      state: the `TrainState` the arrays are meant for.
      arrays: dict of numpy arrays: ``x``, and ``y``, ``weight``, ``x_mask`` if given.
      targets: whether ``y`` is required and checked against the loss.
      allow_nonfinite: let NaN/Inf through (the training step skips those updates).

    Returns:
      The arrays, with dtypes cast by the rules in the module docstring.

    Raises:
      DataError, ShapeError, DTypeError: with the problem and how to fix it.
    """
    arrays = {k: to_numpy(k, v) for k, v in arrays.items()}
    n = check_rows(arrays)
    if targets and "y" not in arrays:
        raise DataError("training and evaluation need targets: pass (x, y).")
    x_mask = arrays.get("x_mask")
    if x_mask is not None and (
        x_mask.shape != arrays["x"].shape[:2] or not _is_numeric(x_mask.dtype)
    ):
        raise ShapeError(
            f"x_mask must be a boolean (n, T) = {arrays['x'].shape[:2]} array, got "
            f"{x_mask.dtype} {x_mask.shape}."
        )
    if not allow_nonfinite:
        for key in ("x", "y", "weight"):
            if key in arrays:
                check_finite(key, arrays[key])
    arrays["x"], out = _check_x(state, arrays["x"], x_mask)
    if targets:
        arrays["y"] = _check_targets(state, arrays["y"], out)
    weight = arrays.get("weight")
    if weight is not None:
        if weight.shape != (n,) or not _is_numeric(weight.dtype):
            raise ShapeError(f"sample weights must be numbers of shape ({n},), got {weight.shape}.")
        if (weight < 0).any():
            raise DataError(f"sample weights must be >= 0; {int((weight < 0).sum())} are negative.")
    return arrays


def check_module_config(module) -> None:
    """`ConfigError` for a dropout rate outside [0, 1) among the module's fields."""
    for field in dataclasses.fields(module) if dataclasses.is_dataclass(module) else ():
        value = getattr(module, field.name, None)
        if (
            "dropout" in field.name
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            if not 0.0 <= value < 1.0:
                raise ConfigError(
                    f"{type(module).__name__}.{field.name} must be in [0, 1), got {value!r}: "
                    "it is the fraction of activations dropped in training."
                )


def check_model_size(module, shape, dtype, *, max_bytes: int | None = None, where="the file"):
    """`FormatError` unless ``module`` on one input row of ``shape`` fits in ``max_bytes``.

    For loaders of untrusted configs: the model is sized with ``jax.eval_shape``
    (nothing allocated), so a file declaring a billion units fails fast instead
    of exhausting memory.
    """
    from jaxnets.training.state import accepted_call_kwargs, mode_kwargs  # state imports this

    max_bytes = MAX_MODEL_BYTES if max_bytes is None else max_bytes
    dims = tuple(shape)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dims):
        raise FormatError(f"{where}: input shape {dims!r} needs positive integer sizes.")
    row = jax.ShapeDtypeStruct((1, *dims), jnp.dtype(dtype))
    total = row.size * row.dtype.itemsize
    if total <= max_bytes:
        kwargs = mode_kwargs(accepted_call_kwargs(module), train=False)
        key = jax.random.key(0)
        init = lambda x: module.init({"params": key, "dropout": key}, x, **kwargs)
        total += sum(v.size * v.dtype.itemsize for v in jax.tree.leaves(jax.eval_shape(init, row)))
    if total > max_bytes:
        raise FormatError(
            f"{where} declares a model of {total} bytes (parameters and one input row), over "
            f"the {max_bytes}-byte limit; raise jaxnets.validation.MAX_MODEL_BYTES if the "
            "file is genuine."
        )
