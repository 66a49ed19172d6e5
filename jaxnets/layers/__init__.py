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
from jaxnets.layers.attention import MultiHeadAttention
from jaxnets.layers.base import Layer
from jaxnets.layers.conv import Conv1D, Conv2D, Conv2DTranspose
from jaxnets.layers.core import (
    Activation,
    Add,
    Average,
    Concatenate,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    Multiply,
    Reshape,
)
from jaxnets.layers.normalization import BatchNormalization, LayerNormalization
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
from jaxnets.layers.recurrent import GRU, LSTM, Bidirectional, SimpleRNN

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
    "Dense",
    "Dropout",
    "Embedding",
    "Flatten",
    "GRU",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "Layer",
    "LayerNormalization",
    "LSTM",
    "MaxPooling1D",
    "MaxPooling2D",
    "MultiHeadAttention",
    "Multiply",
    "Reshape",
    "SimpleRNN",
    "activations",
    "initializers",
]
