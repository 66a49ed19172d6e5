"""Residual networks with basic blocks, for small (CIFAR-size) images.

The stem is one 3x3 convolution without pooling, as in the CIFAR ResNets of
He et al. 2015 (https://arxiv.org/abs/1512.03385, section 4.2); a 1x1
convolution + BatchNorm projects the shortcut whenever a block changes the
shape ("option B"). BatchNorm keeps running statistics in 'batch_stats'.

Presets follow flax ``examples/imagenet/models.py``: `resnet18` (stages
2,2,2,2 of 64..512 filters, 11,173,962 parameters), CIFAR `resnet20` (3 stages
of 3 blocks, 16/32/64 filters, 272,474 parameters) and `resnet_tiny` for tests.

Example:
  >>> import jax
  >>> model = resnet_tiny()
  >>> x = model.example_input(batch_size=2)
  >>> # jax.eval_shape traces without computing: the variables' structure, no FLOPs.
  >>> variables = jax.eval_shape(model.init, jax.random.key(0), x)
  >>> sorted(variables)
  ['batch_stats', 'params']
  >>> train_apply = lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])
  >>> logits, updates = jax.eval_shape(train_apply, variables, x)
  >>> logits.shape, sorted(updates)
  ((2, 10), ['batch_stats'])
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import ClassVar

import flax.linen as nn
import jax

from jaxnets import layers
from jaxnets.models.cnn import check_images
from jaxnets.models.mlp import random_input


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut: ``relu(F(x) + shortcut(x))``."""

    filters: int
    strides: int = 1
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        bn = partial(layers.BatchNormalization, momentum=self.bn_momentum, epsilon=self.bn_epsilon)
        conv = partial(layers.Conv2D, padding="same", use_bias=False)
        y = conv(self.filters, 3, self.strides, name="conv_0")(x)
        y = nn.relu(bn(name="bn_0")(y, train=train))
        y = conv(self.filters, 3, name="conv_1")(y)
        # A zero scale makes each block start as the identity (Goyal et al. 2017,
        # https://arxiv.org/abs/1706.02677), as flax's imagenet example does.
        y = bn(gamma_initializer="zeros", name="bn_1")(y, train=train)
        if x.shape != y.shape:
            x = conv(self.filters, 1, self.strides, name="proj_conv")(x)
            x = bn(name="proj_bn")(x, train=train)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """3x3 stem, stages of `BasicBlock` (filters double, stride 2 from stage 2), GAP, Dense.

    Attributes:
      stage_sizes: number of blocks in each stage.
      num_filters: filters of the stem and first stage; each later stage doubles them.
      num_classes: width of the logits.
      bn_momentum: BatchNorm running-average momentum (Keras default 0.99).
      bn_epsilon: BatchNorm epsilon (Keras default 1e-3).
      input_shape: shape of one image ``(H, W, C)``; only used by `example_input`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.models import ResNet
      >>> model = ResNet(stage_sizes=(1,), num_filters=2, num_classes=3)  # one stage, one block
      >>> x = jnp.zeros((2, 4, 4, 1))
      >>> logits, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
      >>> logits.shape, sum(p.size for p in jax.tree.leaves(variables["params"]))
      ((2, 3), 111)
      >>> sorted(variables["params"])  # stem 18 + 4, block 2 * (36 + 4), logits 9
      ['logits', 'stage1_block1', 'stem_bn', 'stem_conv']
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    num_filters: int = 64
    num_classes: int = 10
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    input_shape: tuple[int, int, int] = (32, 32, 3)

    task: ClassVar[str] = "classify"

    def example_input(self, batch_size: int = 2, seed: int = 0) -> jax.Array:
        """A float ``(batch_size, H, W, C)`` sample input."""
        return random_input((batch_size, *self.input_shape), seed)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Maps ``(B, H, W, C)`` images to ``(B, num_classes)`` logits."""
        x = check_images(x, "ResNet")
        x = layers.Conv2D(self.num_filters, 3, padding="same", use_bias=False, name="stem_conv")(x)
        bn = layers.BatchNormalization(
            momentum=self.bn_momentum, epsilon=self.bn_epsilon, name="stem_bn"
        )
        x = nn.relu(bn(x, train=train))
        for i, num_blocks in enumerate(self.stage_sizes):
            for j in range(num_blocks):
                x = BasicBlock(
                    self.num_filters * 2**i,
                    strides=2 if i > 0 and j == 0 else 1,
                    bn_momentum=self.bn_momentum,
                    bn_epsilon=self.bn_epsilon,
                    name=f"stage{i + 1}_block{j + 1}",
                )(x, train=train)
        x = layers.GlobalAveragePooling2D()(x)  # (B, C)
        return layers.Dense(self.num_classes, name="logits")(x)


resnet18 = partial(ResNet, stage_sizes=(2, 2, 2, 2), num_filters=64)
resnet20 = partial(ResNet, stage_sizes=(3, 3, 3), num_filters=16)
# Tiny preset for tests: two stages of one block, 8/16 filters, 8x8 RGB images.
resnet_tiny = partial(ResNet, stage_sizes=(1, 1), num_filters=8, input_shape=(8, 8, 3))
