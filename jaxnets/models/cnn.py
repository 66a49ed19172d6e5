"""Small image classifiers: the Keras MNIST `CNN` and a BatchNorm `ConvNetBN`.

Images are NHWC float32. `CNN` is the two-conv network of the Keras MNIST
example (34,826 parameters on 28x28x1); `ConvNetBN` stacks Conv-BatchNorm-ReLU
blocks, downsamples with strides instead of pooling, and averages globally, so
it takes any image size.

Example:
  >>> import jax
  >>> model = CNN()
  >>> x = model.example_input(batch_size=2)
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
from jaxnets.layers import conv_ops, initializers
from jaxnets.layers.base import resolve_impl
from jaxnets.layers.pooling import check_fits_window
from jaxnets.models.mlp import random_input


def check_images(x: jax.Array, model: str) -> jax.Array:
    """Returns ``x`` as float32 after checking it is a ``(B, H, W, C)`` batch."""
    if x.ndim != 4:
        raise ShapeError(
            f"{model} expects NHWC images of shape (B, H, W, C), got shape {tuple(x.shape)}; "
            "add a channel axis with x[..., None] for grayscale (B, H, W) images."
        )
    return jnp.asarray(x, jnp.float32)


class PooledConvReLU(nn.Module):
    """``MaxPooling2D(2)(Conv2D(filters, kernel_size, activation="relu")(x))``, reordered.

    A max pool commutes with adding a per-channel bias and with ReLU (both are
    non-decreasing, in floating point too), so the bias and ReLU run after the
    pool on a quarter of the elements: the same values, and gradients that
    differ only where rounding makes two window elements tie. Parameters are
    the Conv2D's (``kernel``, ``bias``) with the same initial values.

    On CPU (``impl`` 'auto' or 'im2col') the convolution and the pool are one
    `jaxnets.layers.conv_ops.conv_maxpool_im2col`: a single product computes
    only the convolution outputs the pool reads. The zoo CNN's training epoch in
    one `lax.scan` (2-core CPU, batch 128, interleaved rounds) ran 1.18x faster
    with the bias and ReLU after the pool (45.0 against 38.1 steps/s), and the
    single product made it 1.24x faster again (59.0 against 47.5 steps/s,
    medians, measured another day): its second convolution is 11x11, so the
    pool drops a row and a column the product never computes.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.ones((1, 6, 6, 1))
      >>> block = PooledConvReLU(4, 3)
      >>> variables = block.init(jax.random.key(0), x)
      >>> block.apply(variables, x).shape, sorted(variables["params"])
      ((1, 2, 2, 4), ['bias', 'kernel'])
    """

    filters: int
    kernel_size: int
    impl: str = "auto"

    def setup(self):
        self.conv = layers.Conv2D(self.filters, self.kernel_size, use_bias=False, impl=self.impl)
        nn.share_scope(self, self.conv)  # kernel and bias side by side, as in Conv2D

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if resolve_impl(self.impl) == "xla":
            pooled = layers.MaxPooling2D(2, impl="xla")(self.conv(x))
        else:
            pooled = self._conv_maxpool(x)
        bias = self.param("bias", nn.initializers.zeros, (self.filters,))
        return jax.nn.relu(pooled + bias.astype(pooled.dtype))

    def _conv_maxpool(self, x: jax.Array) -> jax.Array:
        """The convolution and the pool as one `conv_ops.conv_maxpool_im2col`."""
        if x.ndim != 4:
            raise ShapeError(f"PooledConvReLU expects NHWC images, got shape {x.shape}.")
        # The error the layered path's MaxPooling2D gives, about the convolution's output.
        conv_out = tuple(n - self.kernel_size + 1 for n in x.shape[1:3])
        check_fits_window(f"PooledConvReLU {self.name or ''}: MaxPooling2D", (2, 2), conv_out)
        # Conv2D's parameter with its default initializer, created before the bias
        # as there, so it draws the same init key.
        shape = (self.kernel_size, self.kernel_size, x.shape[-1], self.filters)
        kernel = self.param("kernel", initializers.get("glorot_uniform"), shape)
        return conv_ops.conv_maxpool_im2col(x, kernel.astype(x.dtype), (2, 2))


class CNN(nn.Module):
    """Conv(32, 3x3)-MaxPool(2)-Conv(64, 3x3)-MaxPool(2)-Flatten-[Dropout]-Dense.

    With ``activation="relu"`` (the default) each conv-pool pair runs as
    `PooledConvReLU`: the bias and ReLU after the pool, same values and parameters.

    Attributes:
      filters: channels of the two convolutions.
      kernel_size: side of the square convolution kernels ('valid' padding).
      num_classes: width of the logits.
      activation: name of the activation after each convolution.
      dropout_rate: dropout before the last Dense in train mode ('dropout' rng).
      input_shape: shape of one image ``(H, W, C)``; only used by `example_input`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.models import CNN
      >>> model = CNN(filters=(2, 4), num_classes=3)
      >>> x = jnp.zeros((2, 10, 10, 1))  # 10 -conv-> 8 -pool-> 4 -conv-> 2 -pool-> 1
      >>> # jax.eval_shape traces without computing: shapes only, no FLOPs.
      >>> logits, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
      >>> logits.shape, sum(p.size for p in jax.tree.leaves(variables["params"]))  # 20 + 76 + 15
      ((2, 3), 111)
    """

    filters: Sequence[int] = (32, 64)
    kernel_size: int = 3
    num_classes: int = 10
    activation: str = "relu"
    dropout_rate: float = 0.0
    input_shape: tuple[int, int, int] = (28, 28, 1)

    task: ClassVar[str] = "classify"

    def example_input(self, batch_size: int = 2, seed: int = 0) -> jax.Array:
        """A float ``(batch_size, H, W, C)`` sample input."""
        return random_input((batch_size, *self.input_shape), seed)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Maps ``(B, H, W, C)`` images to ``(B, num_classes)`` logits."""
        x = check_images(x, "CNN")
        for i, width in enumerate(self.filters):
            if self.activation == "relu":
                x = PooledConvReLU(width, self.kernel_size, name=f"conv_{i}")(x)
            else:
                conv = layers.Conv2D(
                    width, self.kernel_size, activation=self.activation, name=f"conv_{i}"
                )
                x = layers.MaxPooling2D(2)(conv(x))
        x = layers.Flatten()(x)  # (B, H' * W' * C')
        if self.dropout_rate > 0:
            x = layers.Dropout(self.dropout_rate)(x, train=train)
        return layers.Dense(self.num_classes, name="logits")(x)


class ConvNetBN(nn.Module):
    """Conv-BatchNorm-ReLU blocks, global average pooling, Dense logits.

    The convolutions have no bias: the BatchNorm offset that follows plays its part.
    `jaxnets.layers.BatchNormalization` uses the Keras defaults (momentum 0.99, epsilon
    1e-3) and keeps running statistics in 'batch_stats' (pass ``mutable=['batch_stats']``
    when ``train=True``).

    Attributes:
      filters: channels of each block.
      strides: stride of each block's 3x3 convolution ('same' padding).
      num_classes: width of the logits.
      input_shape: shape of one image ``(H, W, C)``; only used by `example_input`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.models import ConvNetBN
      >>> model = ConvNetBN(filters=(2, 4), strides=(1, 2), num_classes=3)
      >>> variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 8, 8, 1)))
      >>> sum(p.size for p in jax.tree.leaves(variables["params"])), sorted(variables)
      (117, ['batch_stats', 'params'])
      >>> train = lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])
      >>> logits, updates = jax.eval_shape(train, variables, jnp.zeros((2, 12, 12, 1)))  # any size
      >>> logits.shape, sorted(updates)
      ((2, 3), ['batch_stats'])
    """

    filters: Sequence[int] = (32, 64, 128)
    strides: Sequence[int] = (1, 2, 2)
    num_classes: int = 10
    input_shape: tuple[int, int, int] = (28, 28, 1)

    task: ClassVar[str] = "classify"

    def example_input(self, batch_size: int = 2, seed: int = 0) -> jax.Array:
        """A float ``(batch_size, H, W, C)`` sample input."""
        return random_input((batch_size, *self.input_shape), seed)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Maps ``(B, H, W, C)`` images to ``(B, num_classes)`` logits."""
        x = check_images(x, "ConvNetBN")
        if len(self.filters) != len(self.strides):
            raise ConfigError(
                f"ConvNetBN needs one stride per block: filters={tuple(self.filters)} "
                f"but strides={tuple(self.strides)}."
            )
        for i, (width, stride) in enumerate(zip(self.filters, self.strides, strict=True)):
            x = layers.Conv2D(width, 3, stride, "same", use_bias=False, name=f"conv_{i}")(x)
            x = layers.BatchNormalization(name=f"bn_{i}")(x, train=train)
            x = nn.relu(x)
        x = layers.GlobalAveragePooling2D()(x)  # (B, C)
        return layers.Dense(self.num_classes, name="logits")(x)


cnn = partial(CNN)
convnet_bn = partial(ConvNetBN)
