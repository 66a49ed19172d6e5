"""Merge layers: Concatenate, Add, Multiply, Average (a list of inputs, Keras names).

Example:
  >>> import jax.numpy as jnp
  >>> from jaxnets.layers import Add
  >>> Add().apply({}, [jnp.ones(2), jnp.ones(2)]).tolist()
  [2.0, 2.0]
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxnets.errors import ShapeError
from jaxnets.layers.base import Layer


def _check_list(inputs, what: str) -> list:
    if not isinstance(inputs, list | tuple) or len(inputs) < 2:
        raise ShapeError(f"{what} takes a list of at least 2 arrays, got {type(inputs).__name__}.")
    return list(inputs)


def _check_elementwise(inputs, what: str) -> list:
    """``inputs`` as a list, if their shapes broadcast together (Keras's merge rule)."""
    inputs = _check_list(inputs, what)
    shapes = [tuple(jnp.shape(x)) for x in inputs]
    try:
        jnp.broadcast_shapes(*shapes)
    except ValueError:
        raise ShapeError(
            f"{what} needs inputs of the same shape (or shapes that broadcast), got "
            f"{', '.join(map(str, shapes))}."
        ) from None
    return inputs


def _check_concatenable(inputs, axis: int) -> list:
    """``inputs`` as a list, if they agree on every axis but ``axis`` (as Keras checks)."""
    inputs = _check_list(inputs, "Concatenate")
    shapes = [tuple(jnp.shape(x)) for x in inputs]
    rank = len(shapes[0])
    if any(len(s) != rank for s in shapes) or not -rank <= axis < rank:
        raise ShapeError(
            f"Concatenate(axis={axis}) needs inputs of one rank with that axis, got shapes "
            f"{', '.join(map(str, shapes))}."
        )
    others = {tuple(d for i, d in enumerate(s) if i != axis % rank) for s in shapes}
    if len(others) > 1:
        raise ShapeError(
            f"Concatenate(axis={axis}) needs inputs that match on every other axis, got shapes "
            f"{', '.join(map(str, shapes))}."
        )
    return inputs


class Concatenate(Layer):
    """Concatenates a list of arrays along ``axis`` (default the last).

    Attributes:
      axis: the axis to join on, counted on the full (batched) arrays; default -1.
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(16,)``; only `Sequential` reads it, to build from its first layer. Default None.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.layers import Concatenate
      >>> a, b = jnp.ones((2, 3)), jnp.zeros((2, 1))
      >>> Concatenate().apply({}, [a, b]).shape, Concatenate(axis=0).apply({}, [a, a]).shape
      ((2, 4), (4, 3))
    """

    axis: int = -1

    @nn.compact
    def __call__(self, inputs: Sequence, train: bool = False):
        return jnp.concatenate(_check_concatenable(inputs, self.axis), axis=self.axis)


class Add(Layer):
    """Sums a list of same-shape arrays (residual connections).

    Attributes:
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(16,)``; only `Sequential` reads it, to build from its first layer. Default None.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.layers import Add
      >>> Add().apply({}, [jnp.array([1.0, 2.0]), jnp.array([10.0, 20.0])]).tolist()
      [11.0, 22.0]
    """

    @nn.compact
    def __call__(self, inputs: Sequence, train: bool = False):
        return functools.reduce(operator.add, _check_elementwise(inputs, "Add"))


class Multiply(Layer):
    """Multiplies a list of same-shape arrays elementwise.

    Attributes:
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(16,)``; only `Sequential` reads it, to build from its first layer. Default None.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.layers import Multiply
      >>> Multiply().apply({}, [jnp.array([1.0, 2.0]), jnp.array([10.0, 20.0])]).tolist()
      [10.0, 40.0]
    """

    @nn.compact
    def __call__(self, inputs: Sequence, train: bool = False):
        return functools.reduce(operator.mul, _check_elementwise(inputs, "Multiply"))


class Average(Layer):
    """Averages a list of same-shape arrays elementwise.

    Attributes:
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(16,)``; only `Sequential` reads it, to build from its first layer. Default None.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.layers import Average
      >>> Average().apply({}, [jnp.array([1.0, 2.0]), jnp.array([10.0, 20.0])]).tolist()
      [5.5, 11.0]
    """

    @nn.compact
    def __call__(self, inputs: Sequence, train: bool = False):
        inputs = _check_elementwise(inputs, "Average")
        return sum(inputs[1:], inputs[0]) / len(inputs)
