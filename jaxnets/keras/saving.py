"""``model.save`` / `load_model`: architecture as JSON, arrays through Orbax.

A saved model is a directory::

    model.json       format tag, the architecture (`jaxnets.keras.serialization`),
                     the input shape and dtype, the seed and the compile() arguments
    variables/       parameters and other collections (Orbax StandardCheckpointer)
    train_state/     optimizer state, step, PRNG key data, skip count (if compiled)

A save is written into a new sibling folder that then replaces ``path``, so a
save that fails or is killed half-way leaves the previous one whole.

Loading rebuilds the module from registered classes only, builds it for the
saved input, compiles it with the saved arguments (when they were plain names
and numbers) and restores the arrays into that structure, so predictions and
the next training step are bitwise those of the saved model. Nothing is
pickled or evaluated.

Example:
  >>> import os, tempfile, numpy as np
  >>> from jaxnets import layers
  >>> from jaxnets.keras import Sequential
  >>> model = Sequential([layers.Dense(2, input_shape=(3,))])
  >>> model.compile(optimizer="sgd", loss="mse")
  >>> tmp = tempfile.TemporaryDirectory()
  >>> path = os.path.join(tmp.name, "model")
  >>> model.save(path)
  >>> sorted(os.listdir(path))
  ['model.json', 'train_state', 'variables']
  >>> x = np.ones((1, 3), np.float32)
  >>> bool((load_model(path).predict(x) == model.predict(x)).all())
  True
  >>> tmp.cleanup()
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
import warnings

import jax

from jaxnets import validation
from jaxnets.checkpoint.structure import check_compatible
from jaxnets.errors import CheckpointError, ConfigError, FormatError, JaxnetsError
from jaxnets.keras import serialization

MODEL_FORMAT = "jaxnets.keras.model/1"
WEIGHTS_FORMAT = "jaxnets.keras.weights/1"
_MARKERS = ("model.json", "weights.json")


def _ocp():
    import orbax.checkpoint as ocp  # imported on use: it is slow to import

    return ocp


def _check_target(path: str, overwrite: bool) -> str:
    """The absolute ``path``, after checking that a save may replace what is there."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ConfigError(f"{path} exists and is a file; models are saved as directories.")
        entries = os.listdir(path)
        if entries:
            if not any(m in entries for m in _MARKERS):
                raise ConfigError(
                    f"{path} is a non-empty directory that is not a jaxnets save; refusing to "
                    "overwrite it. Choose a new path."
                )
            if not overwrite:
                raise ConfigError(f"{path} already holds a saved model; pass overwrite=True.")
    return path


@contextlib.contextmanager
def _new_save(path, overwrite: bool):
    """Yields a fresh sibling folder to write into; once written, it replaces ``path``.

    A save that fails or is killed half-way leaves the previous save at ``path``
    whole: ``ModelCheckpoint`` overwrites its best model every time it improves,
    and the old one must stay loadable until the new one is complete.
    """
    path = _check_target(path, overwrite)
    parent, name = os.path.split(path)
    tmp = os.path.join(parent, f".{name}.saving-{uuid.uuid4().hex[:12]}")
    os.makedirs(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(path):
        old = f"{tmp}.old"
        os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, path)


def _write_tree(path: str, tree):
    ocp = _ocp()
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, tree)
        ckptr.wait_until_finished()


def _read_tree(path: str, target):
    ocp = _ocp()
    if not os.path.isdir(path):
        raise CheckpointError(f"missing {path}: the save is incomplete.")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            _check_fits(path, _saved_specs(ckptr, path), abstract)
            return ckptr.restore(path, abstract)
    except CheckpointError:
        raise
    except Exception as e:  # Orbax raises many types for a tree that does not fit
        raise CheckpointError(
            f"cannot restore {path} into this model ({type(e).__name__}: {e}); was it saved "
            "from the same architecture?"
        ) from e


def _saved_specs(ckptr, path: str):
    """The saved tree's array metadata (shapes and dtypes), read without the data."""
    try:
        meta = ckptr.metadata(path)
    except Exception as e:  # Orbax raises many types for a damaged folder
        raise CheckpointError(f"cannot read {path} ({type(e).__name__}: {e}).") from e
    meta = getattr(meta, "item_metadata", meta)
    return getattr(meta, "tree", meta)


def _check_fits(path: str, saved, target):
    """One error listing every missing, unexpected and mis-shaped variable (before reading)."""
    check_compatible(
        saved,
        target,
        what=path,
        hint="Build the model exactly as the saved one (same layers, units and input shape).",
    )


def _train_tree(state) -> dict:
    return {
        "opt_state": state.opt_state,
        "step": state.step,
        "rng": jax.random.key_data(state.rng),
        "skipped": state.skipped,
    }


def _write_json(path: str, obj: dict):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)


def save_model(model, path, overwrite: bool = True):
    """Writes ``model`` to the directory ``path`` (see the module docstring)."""
    arch = serialization.to_config(model.module)  # fails early for unsaveable fields
    if model.compiled and model._keras.compile_config is None and not model._keras.warned_save:
        model._keras.warned_save = True  # once per model, not at every checkpoint
        warnings.warn(
            "save: the compile() settings are not saved (an optax optimizer, a custom loss or "
            "metric object, or non-numeric loss weights have no JSON form); load_model "
            "returns the weights uncompiled, so call compile() again after loading.",
            stacklevel=3,
        )
    variables = model._variables()
    shape, dtype = model._keras.input_spec
    from jaxnets.keras.sequential import Sequential

    meta = {
        "format": MODEL_FORMAT,
        "facade": "Sequential" if isinstance(model, Sequential) else "Model",
        "name": model.name,
        "seed": model.seed,
        "input": {"shape": list(shape), "dtype": dtype},
        "module": arch,
        "compile": model._keras.compile_config,
        # Each fit call shuffles in the order of its index (`Loops._shuffle_seed`):
        # a loaded model's next fit must draw the order the saved one's would.
        "fit_calls": model._keras.fit_calls,
    }
    with _new_save(path, overwrite) as folder:
        _write_json(os.path.join(folder, "model.json"), meta)
        _write_tree(os.path.join(folder, "variables"), variables)
        if model.state is not None:
            _write_tree(os.path.join(folder, "train_state"), _train_tree(model.state))


def _read_meta(path: str, name: str, fmt: str) -> dict:
    file = os.path.join(os.path.abspath(os.fspath(path)), name)
    if not os.path.isfile(file):
        raise FormatError(f"{path} is not a saved jaxnets model: {name} is missing.")
    try:
        with open(file) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise FormatError(f"cannot read {file}: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise FormatError(f"{file} has format {got!r}; expected {fmt!r}.")
    return meta


def _count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FormatError(f"{name} must be a non-negative int, got {value!r}.")
    return value


def load_model(path, custom_objects=None, compile: bool = True):
    """Rebuilds a model saved with ``model.save``.

    Args:
      path: the directory ``model.save`` wrote.
      custom_objects: ``{name: LinenModuleClass}`` for classes outside jaxnets
        (registered with `register_serializable`).
      compile: compile with the saved arguments and restore the optimizer state.

    Returns:
      The model: a `Sequential` if one was saved, else a `jaxnets.keras.Model`.

    Example:
      >>> import os, tempfile
      >>> import numpy as np
      >>> import jaxnets
      >>> from jaxnets import layers
      >>> model = jaxnets.Sequential([layers.Dense(1, input_shape=(2,))])
      >>> model.compile(optimizer="adam", loss="mse")
      >>> x, y = np.ones((16, 2), np.float32), np.ones((16, 1), np.float32)
      >>> _ = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     model.save(os.path.join(tmp, "model"))
      ...     restored = jaxnets.load_model(os.path.join(tmp, "model"))
      >>> type(restored).__name__, restored.compiled, int(restored.state.step)
      ('Sequential', True, 2)
      >>> bool((restored.predict(x) == model.predict(x)).all())
      True
    """
    from jaxnets.keras.model import Model

    for name, cls in (custom_objects or {}).items():
        serialization.register_serializable(cls, name)
    meta = _read_meta(path, "model.json", MODEL_FORMAT)
    try:  # every entry is untrusted: any failure below is a malformed file
        module = serialization.from_config(meta["module"])
        spec, facade = meta["input"], meta["facade"]
        shape, dtype = tuple(spec["shape"]), spec["dtype"]
        # Size the model before building it: a file must not make us allocate what it asks.
        validation.check_model_size(module, shape, dtype, where=f"{path}/model.json")
        model = module if facade == "Sequential" else Model(module, name=meta.get("name"))
        model.seed = int(meta.get("seed", 0))
        model._keras.fit_calls = _count(meta.get("fit_calls", 0), "fit_calls")
        config = meta.get("compile")
        if compile and config:  # compiling first lets build initialise once
            model.compile(
                optimizer=config["optimizer"],
                loss=config["loss"],
                metrics=config["metrics"],
                loss_weights=config.get("loss_weights"),
                run_eagerly=config.get("run_eagerly", False),
            )
        if not model.built:
            model.build((None, *shape), dtype)
    except JaxnetsError:
        raise
    except Exception as e:
        raise FormatError(
            f"{path}/model.json is missing or mangles an entry ({type(e).__name__}: {e})"
        ) from e
    root = os.path.abspath(os.fspath(path))
    model._set_variables(_read_tree(os.path.join(root, "variables"), model._variables()))
    if model.state is not None and os.path.isdir(os.path.join(root, "train_state")):
        state = model.state
        tree = _read_tree(os.path.join(root, "train_state"), _train_tree(state))
        impl = jax.random.key_impl(state.rng)
        model.state = state.replace(
            opt_state=tree["opt_state"],
            step=tree["step"],
            rng=jax.random.wrap_key_data(tree["rng"], impl=impl),
            skipped=tree["skipped"],
        )
    return model


def save_weights(model, path, overwrite: bool = True):
    """Writes only the variables of ``model`` to the directory ``path``."""
    variables = model._variables()
    with _new_save(path, overwrite) as folder:
        _write_json(os.path.join(folder, "weights.json"), {"format": WEIGHTS_FORMAT})
        _write_tree(os.path.join(folder, "variables"), variables)


def load_weights(model, path):
    """Restores variables written by `save_weights` or `save_model` into ``model``."""
    root = os.path.abspath(os.fspath(path))
    if not any(os.path.isfile(os.path.join(root, m)) for m in _MARKERS):
        raise FormatError(f"{path} holds no saved jaxnets weights (no model.json/weights.json).")
    model._set_variables(_read_tree(os.path.join(root, "variables"), model._variables()))


def save_state(state, path, weights_only: bool = False, overwrite: bool = True):
    """Saves a bare `TrainState`'s arrays (what `ModelCheckpoint` does outside ``Model.fit``)."""
    with _new_save(path, overwrite) as folder:
        _write_json(os.path.join(folder, "weights.json"), {"format": WEIGHTS_FORMAT})
        _write_tree(os.path.join(folder, "variables"), state.variables)
        if not weights_only:
            _write_tree(os.path.join(folder, "train_state"), _train_tree(state))
