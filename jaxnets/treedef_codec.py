"""A pytree structure as JSON, its static objects as references into another structure.

`jaxnets.executable_store` must write down a program's output structure (a
`TrainState` with its module, optimizer and loss as static fields, optax
states, dicts of metric sums) without pickle, and rebuild it in a new process
around that process's own objects. `encode` writes each node's type by name and
its static (aux) data as JSON: plain values (strings, numbers, booleans, None,
tuples and lists of them, a dict's keys) literally, any other object as a
reference to the same object in ``known`` (the static data of the program's
arguments, `static_objects`). `decode` resolves the references against the new
process's arguments, and node types only among modules already imported: it
imports nothing and calls no constructor but the registry's.

Example:
  >>> import jax, optax, jax.numpy as jnp
  >>> from jaxnets import treedef_codec
  >>> tree = (optax.adam(1e-3).init({"w": jnp.ones(2)}), {"loss": 0.0}, None)
  >>> text = treedef_codec.encode(jax.tree.structure(tree), [])
  >>> treedef_codec.decode(text, []) == jax.tree.structure(tree)
  True
"""

from __future__ import annotations

import sys

import jax
from jax.tree_util import PyTreeDef, default_registry

_BUILTIN = {"tuple": tuple, "list": list, "dict": dict, "NoneType": type(None)}
_PLAIN = (str, int, float, bool, type(None))


class NotEncodable(ValueError):
    """A structure holds a static object that is neither plain nor among the known ones."""


def static_objects(treedef) -> list:
    """The static (aux) data of every node of ``treedef``, containers opened, in a fixed order.

    Example:
      >>> import jax
      >>> static_objects(jax.tree.structure({"b": 1, "a": 2}))
      [['a', 'b'], 'a', 'b']
    """
    found = []

    def add(obj):
        found.append(obj)
        if isinstance(obj, tuple | list):
            for item in obj:
                add(item)

    def walk(node):
        data = node.node_data()
        if data is not None:
            add(data[1])
        for child in node.children():
            walk(child)

    walk(treedef)
    return found


def _type_name(typ: type) -> str:
    if typ in _BUILTIN.values():
        return typ.__name__
    return f"{typ.__module__}:{typ.__qualname__}"


def _resolve(name: str) -> type:
    if name in _BUILTIN:
        return _BUILTIN[name]
    module, _, qualname = name.partition(":")
    obj = sys.modules[module]  # a KeyError (not an import) when the module is not loaded
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, type):
        raise TypeError(f"{name} is not a class")
    return obj


def _encode_value(value, index: dict):
    if isinstance(value, _PLAIN) and not isinstance(value, type):
        return {"v": value}
    if id(value) in index:
        return {"ref": index[id(value)]}
    if type(value) in (tuple, list):
        return {type(value).__name__: [_encode_value(v, index) for v in value]}
    raise NotEncodable(f"static value {type(value).__name__} is neither plain nor known")


def _decode_value(obj, known: list):
    if "v" in obj:
        return obj["v"]
    if "ref" in obj:
        return known[obj["ref"]]
    kind, items = next(iter(obj.items()))
    return _BUILTIN[kind](_decode_value(v, known) for v in items)


def encode(treedef, known: list) -> dict:
    """``treedef`` as a JSON-able dict; objects of ``known`` are written as references.

    Raises:
      NotEncodable: a static object is neither plain nor (by identity) in ``known``.
    """
    index = {id(o): i for i, o in enumerate(known) if not isinstance(o, _PLAIN)}

    def node(t):
        data = t.node_data()
        if data is None:
            return None  # a leaf
        typ, aux = data
        return [_type_name(typ), _encode_value(aux, index), [node(c) for c in t.children()]]

    return {"tree": node(treedef)}


def decode(encoded: dict, known: list):
    """The `PyTreeDef` `encode` wrote, its references taken from ``known``."""
    leaf = jax.tree.structure(0)

    def node(obj):
        if obj is None:
            return leaf
        name, aux, children = obj
        data = (_resolve(name), _decode_value(aux, known))
        return PyTreeDef.from_node_data_and_children(
            default_registry, data, [node(c) for c in children]
        )

    return node(encoded["tree"])
