"""Pytrees as flat ``{"a/b/c": leaf}`` dicts, and the one error for trees that differ.

Checkpoints are compared and restored by path, never by position: a leaf's
path is its keys joined with ``/`` (dict keys, NamedTuple field names, list
indices), the form ``flax.traverse_util.flatten_dict(sep="/")`` gives for
parameters. `check_compatible` lists *every* missing, unexpected and
mis-shaped path at once in a `jaxnets.errors.CheckpointError`; nothing is ever
padded, truncated or cast.

Example:
  >>> import numpy as np
  >>> flat = flatten({"params": {"w": np.zeros((2, 3)), "b": np.zeros(3)}})
  >>> sorted(flat)
  ['params/b', 'params/w']
  >>> check_compatible({"w": np.zeros((2, 3))}, {"w": np.zeros((2, 4)), "v": np.zeros(1)})
  Traceback (most recent call last):
  ...
  jaxnets.errors.CheckpointError: the checkpoint does not fit the model (2 problems):
    missing (the model has them, the checkpoint does not):
      v: expected (1,) float64
    wrong shape or dtype:
      w: saved (2, 3) float64, expected (2, 4) float64
  ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxnets.errors import CheckpointError

SEP = "/"


def key_name(key) -> str:
    """The string of one path entry: a dict key, attribute name or sequence index."""
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def path_str(path) -> str:
    return SEP.join(key_name(k) for k in path)


def flatten(tree) -> dict[str, Any]:
    """Flattens a pytree to ``{"a/b/c": leaf}`` (empty subtrees vanish).

    Raises `CheckpointError` if two leaves get the same path (a key holding ``/``).
    """
    out: dict[str, Any] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = path_str(path)
        if name in out:
            raise CheckpointError(
                f"two leaves share the path {name!r}; rename keys that contain {SEP!r}."
            )
        out[name] = leaf
    return out


def nest(flat: Mapping[str, Any]) -> dict:
    """The inverse of `flatten` for dicts: ``{"a/b": x}`` -> ``{"a": {"b": x}}``.

    Example:
      >>> nest({"a/b": 1, "a/c": 2, "d": 3})
      {'a': {'b': 1, 'c': 2}, 'd': 3}
    """
    out: dict = {}
    for name, leaf in flat.items():
        *parents, last = name.split(SEP)
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = leaf
    return out


def unflatten_like(template, flat: Mapping[str, Any]):
    """Builds a tree shaped like ``template`` from ``flat`` (same paths, checked)."""
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    check_compatible(flat, dict((path_str(p), x) for p, x in leaves_with_paths))
    return jax.tree_util.tree_unflatten(treedef, [flat[path_str(p)] for p, _ in leaves_with_paths])


def spec(x) -> tuple[tuple[int, ...], str]:
    """``(shape, dtype name)`` of an array, array metadata or ``ShapeDtypeStruct``."""
    try:
        dtype = np.dtype(x.dtype).name
    except TypeError:  # typed PRNG keys have no numpy dtype
        dtype = str(x.dtype)
    return tuple(int(d) for d in x.shape), dtype


def describe(x) -> str:
    shape, dtype = spec(x)
    return f"{shape} {dtype}"


def differences(saved: Mapping[str, Any], expected: Mapping[str, Any]) -> dict[str, list[str]]:
    """Missing, unexpected and mismatched paths between two flat dicts, as text lines."""
    diff: dict[str, list[str]] = {"missing": [], "unexpected": [], "mismatched": []}
    for name in sorted(set(expected) - set(saved)):
        diff["missing"].append(f"{name}: expected {describe(expected[name])}")
    for name in sorted(set(saved) - set(expected)):
        diff["unexpected"].append(f"{name}: saved {describe(saved[name])}")
    for name in sorted(set(saved) & set(expected)):
        if spec(saved[name]) != spec(expected[name]):
            diff["mismatched"].append(
                f"{name}: saved {describe(saved[name])}, expected {describe(expected[name])}"
            )
    return diff


_HEADINGS = {
    "missing": "missing (the model has them, the checkpoint does not)",
    "unexpected": "unexpected (in the checkpoint, not in the model)",
    "mismatched": "wrong shape or dtype",
}

HINT = (
    "Build the model and optimizer exactly as for the saved run, or load only matching "
    "parameters with jaxnets.checkpoint.load_pretrained(..., skip_mismatch=True)."
)


def check_compatible(saved, expected, *, what: str = "the checkpoint", hint: str = HINT):
    """Raises one `CheckpointError` listing every path where ``saved`` and ``expected`` differ.

    Args:
      saved, expected: pytrees or flat ``{path: array-like}`` dicts; only shapes
        and dtypes are compared, so array metadata works as well as arrays.
      what: how the message names the saved side.
      hint: the last line of the message: how to fix the call.

    Example:
      >>> import jax, numpy as np
      >>> from jaxnets.checkpoint import check_compatible
      >>> saved = {"params": {"w": np.zeros((2, 3), np.float32)}}
      >>> print(check_compatible(saved, {"params": {"w": jax.ShapeDtypeStruct((2, 3), "float32")}}))
      None
      >>> expected = {"params": {"w": np.zeros((2, 3))}}  # float64
      >>> check_compatible(saved, expected, what="old.ckpt", hint="Build the model in float32.")
      Traceback (most recent call last):
      ...
      jaxnets.errors.CheckpointError: old.ckpt does not fit the model (1 problem):
        wrong shape or dtype:
          params/w: saved (2, 3) float32, expected (2, 3) float64
      Build the model in float32.
    """
    saved = flatten(saved)
    expected = flatten(expected)
    diff = differences(saved, expected)
    count = sum(len(v) for v in diff.values())
    if not count:
        return
    lines = [f"{what} does not fit the model ({count} problem{'s' if count > 1 else ''}):"]
    for kind, items in diff.items():
        if items:
            lines.append(f"  {_HEADINGS[kind]}:")
            lines.extend(f"    {item}" for item in items)
    lines.append(hint)
    raise CheckpointError("\n".join(lines))
