"""Architectures as data: Linen modules to JSON and back, through an explicit registry.

A module is written as ``{"__module__": "Dense", "config": {...}}`` holding the
dataclass fields that differ from their defaults; nested modules (the layers
of a `Sequential`, the layer inside ``Bidirectional``) nest the same way. A
callable field is written by name when it is a registered activation, and
refused otherwise. Reading looks each class up in `SERIALIZABLE` (jaxnets
layers, `Sequential`, the zoo models, plus whatever `register_serializable`
added): an unknown class raises `jaxnets.errors.FormatError`. Nothing is
imported by name, pickled or evaluated.

Example:
  >>> from jaxnets import layers
  >>> config = to_config(layers.Dense(4, activation="relu"))
  >>> config
  {'__module__': 'Dense', 'config': {'units': 4, 'activation': 'relu'}}
  >>> from_config(config)
  Dense(
      # attributes
      input_shape = None
      trainable = True
      units = 4
      activation = 'relu'
      use_bias = True
      kernel_initializer = 'glorot_uniform'
      bias_initializer = 'zeros'
      kernel_regularizer = None
      bias_regularizer = None
  )
  >>> from_config({"__module__": "os.system", "config": {}})
  Traceback (most recent call last):
  ...
  jaxnets.errors.FormatError: unknown layer class 'os.system' in the saved architecture...
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import numpy as np

from jaxnets import layers as layers_lib
from jaxnets import models as models_lib
from jaxnets import regularizers
from jaxnets.errors import ConfigError, FormatError, suggest
from jaxnets.layers import activations

_LAYER_NAMES = [
    n for n in layers_lib.__all__ if isinstance(getattr(layers_lib, n), type) and n != "Layer"
]
_MODEL_NAMES = [
    "CNN",
    "CNN1D",
    "ConvAutoencoder",
    "ConvNetBN",
    "DenseAutoencoder",
    "GPT",
    "MLP",
    "RecurrentClassifier",
    "ResNet",
    "TransformerBlock",
    "TransformerClassifier",
]

SERIALIZABLE: dict[str, type] = {n: getattr(layers_lib, n) for n in _LAYER_NAMES}
SERIALIZABLE.update({n: getattr(models_lib, n) for n in _MODEL_NAMES if hasattr(models_lib, n)})
_ACTIVATION_NAMES = {id(fn): name for name, fn in activations.ACTIVATIONS.items()}


def register_serializable(cls: type | None = None, name: str | None = None, *, package=None):
    """Allows ``cls`` (a Linen module class) in saved architectures; usable as a decorator.

    Written ``@register_serializable`` or, as Keras's
    ``register_keras_serializable(package=..., name=...)``, with parentheses.

    Args:
      cls: the class (None for the decorator-with-arguments form).
      name: the name saved files use (default: the class name).
      package: accepted for Keras compatibility; names here have no package prefix.

    Example:
      >>> @register_serializable
      ... class Twice(nn.Module):
      ...     def __call__(self, x, train=False):
      ...         return 2 * x
      >>> from_config(to_config(Twice()))
      Twice()
      >>> @register_serializable(package="my_models")
      ... class Thrice(nn.Module):
      ...     def __call__(self, x, train=False):
      ...         return 3 * x
      >>> from_config(to_config(Thrice()))
      Thrice()
    """
    if cls is None:  # the decorator-factory form, @register_serializable(...)
        return lambda c: register_serializable(c, name)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise FormatError(f"only Flax Linen module classes can be registered, got {cls!r}.")
    key = name or cls.__name__
    if SERIALIZABLE.get(key, cls) is not cls:
        raise FormatError(f"another class is already registered as {key!r}.")
    SERIALIZABLE[key] = cls
    return cls


def _registered_name(cls: type) -> str:
    for name, known in SERIALIZABLE.items():
        if known is cls:
            return name
    raise FormatError(
        f"cannot save a {cls.__name__}: the class is not registered. Register it with "
        "jaxnets.keras.register_serializable(cls) (and before load_model in the loading program)."
    )


def _encode(value, where: str):
    if isinstance(value, nn.Module):
        return to_config(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.generic):
        return _encode(value.item(), where)
    if isinstance(value, list | tuple):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"__dict__": {k: _encode(v, f"{where}.{k}") for k, v in value.items()}}
    if isinstance(value, regularizers.L1L2):
        return {"__regularizer__": {"l1": value.l1, "l2": value.l2}}
    if callable(value) and id(value) in _ACTIVATION_NAMES:
        return _ACTIVATION_NAMES[id(value)]
    raise FormatError(
        f"cannot save {where} = {value!r}: only numbers, strings, lists, registered modules "
        "and activations by name are stored. Pass a name (e.g. activation='relu') instead."
    )


def to_config(module: nn.Module) -> dict:
    """The JSON-ready description of ``module``: class name plus non-default fields."""
    cls = type(module)
    name = _registered_name(cls)
    config = {}
    for f in dataclasses.fields(module):
        if f.name == "parent" or not f.init:
            continue
        value = getattr(module, f.name)
        if f.default is not dataclasses.MISSING and _same(value, f.default):
            continue
        if f.default_factory is not dataclasses.MISSING and _same(value, f.default_factory()):
            continue
        config[f.name] = _encode(value, f"{name}.{f.name}")
    return {"__module__": name, "config": config}


def _same(a, b) -> bool:
    try:
        return a is b or bool(a == b)
    except Exception:  # arrays and other values without a plain truth value
        return False


def _decode(value, where: str):
    if isinstance(value, list):
        return tuple(_decode(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, dict):
        if "__module__" in value:
            return from_config(value, where)
        if set(value) == {"__dict__"} and isinstance(value["__dict__"], dict):
            return {k: _decode(v, f"{where}.{k}") for k, v in value["__dict__"].items()}
        if set(value) == {"__regularizer__"} and isinstance(value["__regularizer__"], dict):
            try:
                return regularizers.L1L2(**value["__regularizer__"])
            except (TypeError, ValueError, ConfigError) as e:
                raise FormatError(f"bad regularizer at {where}: {value!r:.200} ({e}).") from e
        raise FormatError(f"unexpected object at {where} in the saved architecture: {value!r}.")
    if value in ("inf", "-inf", "nan"):
        return float(value)
    return value


def from_config(config: dict, where: str = "model") -> nn.Module:
    """Rebuilds a module written by `to_config`; unknown classes raise `FormatError`."""
    if not isinstance(config, dict) or set(config) != {"__module__", "config"}:
        raise FormatError(
            f"{where} must be {{'__module__': name, 'config': {{...}}}}, got {config!r:.200}."
        )
    name, fields = config["__module__"], config["config"]
    cls = SERIALIZABLE.get(name) if isinstance(name, str) else None
    if cls is None:
        raise FormatError(
            f"unknown layer class {name!r} in the saved architecture{suggest(str(name), SERIALIZABLE)}"
            f" Allowed: {', '.join(sorted(SERIALIZABLE))}; register others with "
            "jaxnets.keras.register_serializable."
        )
    if not isinstance(fields, dict):
        raise FormatError(f"the config of {name} at {where} must be a dict, got {fields!r:.200}.")
    valid = {f.name for f in dataclasses.fields(cls) if f.init and f.name != "parent"}
    unknown = sorted(set(fields) - valid)
    if unknown:
        raise FormatError(
            f"{name} at {where} has no field(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}."
        )
    kwargs = {k: _decode(v, f"{where}.{k}") for k, v in fields.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise FormatError(f"cannot rebuild {name} at {where} from {kwargs}: {e}") from e


def _register_facade_classes():
    from jaxnets.keras import nlp
    from jaxnets.keras.sequential import Sequential

    SERIALIZABLE["Sequential"] = Sequential
    SERIALIZABLE["TokenAndPositionEmbedding"] = nlp.TokenAndPositionEmbedding
    SERIALIZABLE["TransformerEncoder"] = nlp.TransformerEncoder


_register_facade_classes()
