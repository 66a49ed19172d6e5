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
import re
import types

import pytest

import jaxnets

# The subpackages `jaxnets` exports, and the public modules it leaves to a direct import.
PUBLIC_MODULES = (
    *(n for n in jaxnets.__all__ if isinstance(getattr(jaxnets, n), types.ModuleType)),
    "compile",
    "population",
    "precision",
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


def test_undescribed_parameters_are_found():
    def scale(x, alpha, beta=0.0):
        """Returns ``x * alpha``; adds the beta_offset."""  # `beta` is never named

    assert _undescribed_parameters(scale) == ["beta"]


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_object_has_a_runnable_example(module_name):
    missing = sorted(
        name
        for name, obj in public_objects(module_name).items()
        if ">>>" not in (inspect.getdoc(obj) or "")
    )
    assert not missing, f"public objects without an `Example:` (>>>) in their docstring: {missing}"


def _undescribed_parameters(obj) -> list[str]:
    """Parameters of ``obj`` (a function, or a class's constructor) its docstring never names."""
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):  # a class without an inspectable constructor
        return []
    doc = inspect.getdoc(obj) or ""
    # Flax fills in `parent` and `name` on every module; *args/**kwargs are forwarded;
    # every layer's Keras `trainable` flag is described once, on `jaxnets.layers.Layer`.
    skip = {"self", "parent", "name", "args", "kwargs", "trainable"}
    return [p for p in params if p not in skip and not re.search(rf"\b{re.escape(p)}\b", doc)]


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_parameter_is_described(module_name):
    undescribed = {
        name: missing
        for name, obj in public_objects(module_name).items()
        if (missing := _undescribed_parameters(obj))
    }
    assert not undescribed, f"parameters missing from the Args/Attributes sections: {undescribed}"
