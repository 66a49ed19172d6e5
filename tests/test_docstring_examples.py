"""Every public function and class has a runnable example in its docstring.

`pytest --doctest-modules` (pyproject.toml) runs those examples; this test
makes sure they exist, so a new public name cannot ship without one.
"Public" is what a user reaches from a public subpackage: its ``__all__``, or
its names without a leading underscore, defined in jaxnets. Exception and
warning classes are exempt: raising one is their whole use.
"""

from __future__ import annotations

import importlib
import inspect

import pytest

PUBLIC_MODULES = (
    "callbacks",
    "checkpoint",
    "compile",
    "data",
    "errors",
    "keras",
    "layers",
    "losses",
    "metrics",
    "models",
    "optim",
    "population",
    "precision",
    "training",
    "tune",
)


def public_objects(module_name: str) -> dict:
    """``{qualified name: object}`` of the public functions and classes jaxnets defines."""
    module = importlib.import_module(f"jaxnets.{module_name}")
    names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
    found = {}
    for name in names:
        obj = getattr(module, name)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if not getattr(obj, "__module__", "").startswith("jaxnets"):
            continue  # re-exported from JAX, Flax or Optax
        if inspect.isclass(obj) and issubclass(obj, Exception | Warning):
            continue
        found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_public_objects_are_found():
    # Guards the test below against passing on an empty list.
    objects = public_objects("training")
    assert "jaxnets.training.loop.fit" in objects
    assert "jaxnets.training.state.TrainState" in objects
    assert not any(name.startswith("flax") or name.startswith("optax") for name in objects)


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_object_has_a_runnable_example(module_name):
    missing = sorted(
        name
        for name, obj in public_objects(module_name).items()
        if ">>>" not in (inspect.getdoc(obj) or "")
    )
    assert not missing, f"public objects without an `Example:` (>>>) in their docstring: {missing}"
