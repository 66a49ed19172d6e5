"""The order of `Model.get_weights`: Keras's, layer by layer.

Keras lists each layer's weights in turn, in the order the layer made them:
``kernel, bias`` for ``Dense`` and ``Conv``; ``gamma, beta, moving_mean,
moving_variance`` for ``BatchNormalization``; ``kernel, recurrent_kernel,
bias`` for recurrent layers. A JAX tree flattens dicts in sorted key order
instead (``bias`` before ``kernel``, ``layers_10`` before ``layers_2``, every
BatchNorm statistic after every parameter), which would make the Keras idiom
``W, b = model.get_weights()`` swap the two silently. This module sorts the
variables' paths the Keras way:

* modules by name, numbers compared as numbers (``layers_2`` before
  ``layers_10``), a Bidirectional layer's ``forward`` before its ``backward``;
* a module's own variables before its submodules', its parameters and its
  statistics together;
* within a module, kernels, then scales, then biases, then moving statistics,
  then any other name alphabetically.

Flax modules not built by `Sequential` name their submodules ``Dense_0``,
``Conv_0``...: those sort by name, since a tree keeps no record of the order
in which they were made.

Example:
  >>> import numpy as np
  >>> variables = {"params": {"layers_10": {"bias": 0, "kernel": 0}, "layers_2": {"scale": 0, "bias": 0}},
  ...              "batch_stats": {"layers_2": {"var": 0, "mean": 0}}}
  >>> ["/".join(p) for p in keras_paths(variables)]
  ['params/layers_2/scale', 'params/layers_2/bias', 'batch_stats/layers_2/mean', 'batch_stats/layers_2/var', 'params/layers_10/kernel', 'params/layers_10/bias']
"""

from __future__ import annotations

import re

import jax

_LEAF_RANK = {
    "kernel": 0,
    "embedding": 0,
    "depthwise_kernel": 0,  # SeparableConv2D: depthwise, pointwise, bias
    "recurrent_kernel": 1,
    "pointwise_kernel": 1,
    "scale": 2,
    "bias": 3,
    "mean": 4,
    "var": 5,
}
_MODULE_RANK = {
    "forward": 0,  # Bidirectional
    "backward": 1,
    "query": 0,  # MultiHeadAttention
    "key": 1,
    "value": 2,
    "attention_output": 3,
}
_COLLECTION_RANK = {"params": 0, "batch_stats": 1}


def _natural(name: str) -> tuple:
    """``"layers_10"`` -> ``("layers_", 10, "")``: numbers compare as numbers."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if p.isdigit() else p for p in parts)


def _sort_key(path: tuple[str, ...]) -> tuple:
    collection, *modules, leaf = path
    levels = [(1, _MODULE_RANK.get(m, 2), _natural(m)) for m in modules]
    # A module's own variables (level kind 0) come before its submodules' (kind 1).
    levels.append((0, _LEAF_RANK.get(leaf, 9), _COLLECTION_RANK.get(collection, 2), leaf))
    return tuple(levels)


def keras_paths(variables: dict) -> list[tuple[str, ...]]:
    """Every leaf's path ``(collection, module..., name)`` in Keras's weight order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(variables)
    paths = [tuple(str(getattr(k, "key", k)) for k in path) for path, _ in flat]
    return sorted(paths, key=_sort_key)


def get_path(tree: dict, path: tuple[str, ...]):
    """The leaf of a nested dict at ``path``.

    Example:
      >>> get_path({"params": {"dense": {"kernel": 1}}}, ("params", "dense", "kernel"))
      1
    """
    for key in path:
        tree = tree[key]
    return tree


def with_leaves(tree: dict, paths: list[tuple[str, ...]], leaves: list) -> dict:
    """A copy of nested dict ``tree`` with ``leaves[i]`` at ``paths[i]``.

    Example:
      >>> with_leaves({"a": {"b": 1, "c": 2}}, [("a", "c")], [5])
      {'a': {'b': 1, 'c': 5}}
    """
    tree = jax.tree.map(lambda x: x, tree)  # new dicts all the way down
    for path, leaf in zip(paths, leaves, strict=True):
        node = tree
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = leaf
    return tree
