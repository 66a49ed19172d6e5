"""Multi-layer perceptrons: the smallest classifier in the zoo.

`MLP` flattens every input to ``(B, features)``, so the same model reads
``(B, 784)`` vectors or ``(B, 28, 28, 1)`` images.

Example:
  >>> import jax
  >>> model = mlp_784_128_10()
  >>> x = model.example_input(batch_size=2)
  >>> variables = jax.jit(model.init)(jax.random.key(0), x)
  >>> model.apply(variables, x).shape
  (2, 10)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxnets import layers


def random_input(shape: Sequence[int], seed: int = 0) -> jax.Array:
    """Standard-normal float32 array of ``shape``: the zoo's sample inputs.

    Drawn with NumPy, so building a sample compiles nothing.

    Example:
      >>> random_input((2, 3)).dtype
      dtype('float32')
    """
    return jnp.asarray(np.random.default_rng(seed).standard_normal(tuple(shape)), jnp.float32)


def random_tokens(shape: Sequence[int], vocab_size: int, seed: int = 0) -> jax.Array:
    """Uniform int32 tokens in ``[0, vocab_size)`` of ``shape`` (NumPy-drawn).

    Example:
      >>> random_tokens((2, 3), vocab_size=5).dtype
      dtype('int32')
    """
    return jnp.asarray(np.random.default_rng(seed).integers(0, vocab_size, tuple(shape)), jnp.int32)


class MLP(nn.Module):
    """Dense layers with a nonlinearity between them, then a linear logits layer.

    Attributes:
      features: widths of the hidden layers, in order.
      num_classes: width of the output (logits) layer.
      activation: Keras activation name (or callable) after each hidden layer.
      dropout_rate: dropout after each hidden activation in train mode ('dropout' rng).
      input_shape: shape of one example; only used by `example_input`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.models import MLP
      >>> model = MLP(features=(4,), num_classes=3, input_shape=(2,))
      >>> x = jnp.ones((5, 2))
      >>> logits, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
      >>> logits.shape, sum(p.size for p in jax.tree.leaves(variables["params"]))  # 2*4+4 + 4*3+3
      ((5, 3), 27)
    """

    features: Sequence[int] = (128,)
    num_classes: int = 10
    activation: str = "relu"
    dropout_rate: float = 0.0
    input_shape: tuple[int, ...] = (28, 28, 1)

    task: ClassVar[str] = "classify"

    def example_input(self, batch_size: int = 2, seed: int = 0) -> jax.Array:
        """A float ``(batch_size, *input_shape)`` sample input."""
        return random_input((batch_size, *self.input_shape), seed)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Maps ``(B, ...)`` inputs to ``(B, num_classes)`` logits."""
        x = jnp.asarray(x, jnp.float32).reshape((x.shape[0], -1))  # (B, F)
        for i, width in enumerate(self.features):
            x = layers.Dense(width, activation=self.activation, name=f"dense_{i}")(x)
            if self.dropout_rate > 0:
                x = layers.Dropout(self.dropout_rate)(x, train=train)
        return layers.Dense(self.num_classes, name="logits")(x)


# 784 -> 128 -> 10: the classic MNIST baseline.
mlp_784_128_10 = partial(MLP, features=(128,), num_classes=10)
mlp_784_64_64_10 = partial(MLP, features=(64, 64), num_classes=10)
