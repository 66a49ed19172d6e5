"""Keras-named Flax Linen layers.

Argument names follow Keras (``Dense(units, activation=...)``,
``Conv2D(filters, kernel_size, strides, padding)``) so Keras models port line
for line. Every layer is a `flax.linen.Module` whose ``__call__`` takes
``train: bool = False``, accepts a keyword-only ``input_shape=`` (read by the
``Sequential`` facade, ignored by the math) and Flax's ``name=``.

Convolutions and pooling pick a CPU-fast implementation automatically
(``impl='auto'``); see `jaxnets.layers.conv`.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxnets import layers
  >>> model = layers.Conv2D(4, 3, activation="relu", input_shape=(8, 8, 1))
  >>> x = jnp.ones((2, 8, 8, 1))
  >>> model.apply(model.init(jax.random.key(0), x), x).shape
  (2, 6, 6, 4)
"""

from jaxnets.layers import activations, initializers
from jaxnets.layers.activation_layers import Activation, LeakyReLU, ReLU, Softmax
from jaxnets.layers.attention import MultiHeadAttention
from jaxnets.layers.base import Layer
from jaxnets.layers.conv import (
    Conv1D,
    Conv2D,
    Conv2DTranspose,
    DepthwiseConv2D,
    SeparableConv2D,
)
from jaxnets.layers.core import Dense, Embedding, Flatten, Reshape
from jaxnets.layers.merging import Add, Average, Concatenate, Multiply
from jaxnets.layers.noise import Dropout, GaussianNoise, SpatialDropout1D, SpatialDropout2D
from jaxnets.layers.normalization import (
    BatchNormalization,
    GroupNormalization,
    LayerNormalization,
    UnitNormalization,
)
from jaxnets.layers.pooling import (
    AveragePooling1D,
    AveragePooling2D,
    GlobalAveragePooling1D,
    GlobalAveragePooling2D,
    GlobalMaxPooling1D,
    GlobalMaxPooling2D,
    MaxPooling1D,
    MaxPooling2D,
)
from jaxnets.layers.recurrent import GRU, LSTM, SimpleRNN
from jaxnets.layers.reshaping import (
    Cropping1D,
    Cropping2D,
    Permute,
    RepeatVector,
    UpSampling1D,
    UpSampling2D,
    ZeroPadding1D,
    ZeroPadding2D,
)
from jaxnets.layers.wrappers import Bidirectional, TimeDistributed

__all__ = [
    "Activation",
    "Add",
    "Average",
    "AveragePooling1D",
    "AveragePooling2D",
    "BatchNormalization",
    "Bidirectional",
    "Concatenate",
    "Conv1D",
    "Conv2D",
    "Conv2DTranspose",
    "Cropping1D",
    "Cropping2D",
    "Dense",
    "DepthwiseConv2D",
    "Dropout",
    "Embedding",
    "Flatten",
    "GaussianNoise",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GRU",
    "GroupNormalization",
    "Layer",
    "LayerNormalization",
    "LeakyReLU",
    "LSTM",
    "MaxPooling1D",
    "MaxPooling2D",
    "MultiHeadAttention",
    "Multiply",
    "Permute",
    "ReLU",
    "RepeatVector",
    "Reshape",
    "SeparableConv2D",
    "SimpleRNN",
    "Softmax",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "TimeDistributed",
    "UnitNormalization",
    "UpSampling1D",
    "UpSampling2D",
    "ZeroPadding1D",
    "ZeroPadding2D",
    "activations",
    "initializers",
]
