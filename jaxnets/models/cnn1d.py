"""A 1-D convolutional classifier for sequences: the MNIST-1D reference CNN.

Greydanus 2020, "Scaling down deep learning" (https://arxiv.org/abs/2011.14439),
``mnist1d`` ``ConvBase``: three ReLU convolutions of 25 channels (kernels 5, 3, 3,
stride 2, padding 1), flatten, Dense. On length-40 inputs the lengths go
40 -> 19 -> 10 -> 5, so the Dense layer reads 5 * 25 = 125 features (5,210
parameters in all).

Example:
  >>> import jax
  >>> model = cnn1d()
  >>> x = model.example_input(batch_size=2)
  >>> x.shape
  (2, 40)
  >>> variables = jax.jit(model.init)(jax.random.key(0), x)
  >>> jax.jit(model.apply)(variables, x).shape
  (2, 10)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnets import layers
from jaxnets.errors import ConfigError, ShapeError
from jaxnets.models.mlp import random_input


class CNN1D(nn.Module):
    """Strided 1-D convolutions, flatten, Dense logits.

    Attributes:
      channels: output channels of each convolution.
      kernel_sizes: kernel width of each convolution.
      strides: stride shared by every convolution.
      padding: zeros added on both ends before each convolution.
      num_classes: width of the logits.
      activation: name of the activation after each convolution.
      input_shape: shape of one example ``(T,)`` or ``(T, C)``; only used by `example_input`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.models import CNN1D
      >>> model = CNN1D(channels=(2, 2), kernel_sizes=(3, 3), num_classes=3)
      >>> x = jnp.zeros((5, 8))  # lengths 8 -> 4 -> 2, so the Dense reads 2 * 2 features
      >>> logits, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
      >>> logits.shape, sum(p.size for p in jax.tree.leaves(variables["params"]))  # 8 + 14 + 15
      ((5, 3), 37)
    """

    channels: Sequence[int] = (25, 25, 25)
    kernel_sizes: Sequence[int] = (5, 3, 3)
    strides: int = 2
    padding: int = 1
    num_classes: int = 10
    activation: str = "relu"
    input_shape: tuple[int, ...] = (40,)

    task: ClassVar[str] = "classify"

    def example_input(self, batch_size: int = 2, seed: int = 0) -> jax.Array:
        """A float ``(batch_size, *input_shape)`` sample input."""
        return random_input((batch_size, *self.input_shape), seed)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Maps ``(B, T)`` or ``(B, T, C)`` sequences to ``(B, num_classes)`` logits."""
        if x.ndim == 2:
            x = x[..., None]  # (B, T, 1): one input channel
        if x.ndim != 3:
            raise ShapeError(
                f"CNN1D expects sequences of shape (B, T) or (B, T, C), got {tuple(x.shape)}."
            )
        if len(self.channels) != len(self.kernel_sizes):
            raise ConfigError(
                f"CNN1D needs one kernel size per convolution: channels={tuple(self.channels)} "
                f"but kernel_sizes={tuple(self.kernel_sizes)}."
            )
        x = jnp.asarray(x, jnp.float32)
        for i, (width, k) in enumerate(zip(self.channels, self.kernel_sizes, strict=True)):
            # PyTorch-style symmetric zero padding, then a 'valid' Keras convolution.
            x = jnp.pad(x, ((0, 0), (self.padding, self.padding), (0, 0)))
            x = layers.Conv1D(width, k, self.strides, activation=self.activation, name=f"conv_{i}")(
                x
            )
        x = layers.Flatten()(x)  # (B, T' * C')
        return layers.Dense(self.num_classes, name="logits")(x)


cnn1d = partial(CNN1D)
