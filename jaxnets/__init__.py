"""jaxnets: a functional neural-network framework for JAX.

The Keras-style names (``Sequential``, ``Model``, ``load_model``) and the
subpackages (``layers``, ``models``, ``data``, ``callbacks``, ``training``,
``checkpoint``...)
are imported on first use, so ``import jaxnets`` stays cheap.

Example:
  >>> import jaxnets
  >>> jaxnets.Sequential is jaxnets.keras.Sequential
  True
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "callbacks",
    "checkpoint",
    "data",
    "errors",
    "keras",
    "layers",
    "losses",
    "metrics",
    "models",
    "optim",
    "regularizers",
    "training",
)
_FACADE = {"Sequential": "jaxnets.keras", "Model": "jaxnets.keras", "load_model": "jaxnets.keras"}

__all__ = [*_SUBMODULES, *_FACADE]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"jaxnets.{name}")
    if name in _FACADE:
        return getattr(importlib.import_module(_FACADE[name]), name)
    raise AttributeError(f"module 'jaxnets' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
