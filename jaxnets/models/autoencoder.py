"""Autoencoders: dense and convolutional encoder/decoder pairs.

``model.apply(variables, x)`` returns the reconstruction (linear outputs, same
shape as ``x``: train it with a squared error); ``method="encode"`` gives the
``(B, latent_dim)`` code and ``method="decode"`` maps codes back to inputs.

Example:
  >>> import jax
  >>> model = autoencoder_dense()
  >>> x = model.example_input(batch_size=2)
  >>> variables = jax.jit(model.init)(jax.random.key(0), x)
  >>> model.apply(variables, x).shape
  (2, 28, 28, 1)
  >>> model.apply(variables, x, method="encode").shape
  (2, 16)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnets import layers
from jaxnets.errors import ConfigError, ShapeError
from jaxnets.models.mlp import random_input


def _check_input(x: jax.Array, input_shape: tuple[int, ...], model: str) -> jax.Array:
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise ShapeError(
            f"{model} was built for inputs of shape (B, *{tuple(input_shape)}), got "
            f"{tuple(x.shape)}; set input_shape={tuple(x.shape[1:])}."
        )
    return jnp.asarray(x, jnp.float32)


class DenseAutoencoder(nn.Module):
    """Flatten -> ReLU Dense layers -> code -> mirrored ReLU Dense layers -> reshape.

    Attributes:
      hidden: widths of the encoder's hidden layers (the decoder mirrors them).
      latent_dim: width of the code.
      input_shape: shape of one example; the decoder's output layer has its size.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.models import DenseAutoencoder
      >>> model = DenseAutoencoder(hidden=(4,), latent_dim=2, input_shape=(3,))
      >>> x = jnp.zeros((5, 3))  # widths 3 -> 4 -> 2 -> 4 -> 3
      >>> out, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
      >>> out.shape, sum(p.size for p in jax.tree.leaves(variables["params"]))  # 16 + 10 + 12 + 15
      ((5, 3), 53)
      >>> jax.eval_shape(lambda v: model.apply(v, x, method="encode"), variables).shape
      (5, 2)
    """

    hidden: Sequence[int] = (64,)
    latent_dim: int = 16
    input_shape: tuple[int, ...] = (28, 28, 1)

    task: ClassVar[str] = "reconstruct"

    def example_input(self, batch_size: int = 2, seed: int = 0) -> jax.Array:
        """A float ``(batch_size, *input_shape)`` sample input."""
        return random_input((batch_size, *self.input_shape), seed)

    def setup(self):
        self.encoder_layers = [
            layers.Dense(w, activation="relu", name=f"enc_{i}") for i, w in enumerate(self.hidden)
        ]
        self.code = layers.Dense(self.latent_dim, name="code")
        self.decoder_layers = [
            layers.Dense(w, activation="relu", name=f"dec_{i}")
            for i, w in enumerate(reversed(self.hidden))
        ]
        self.reconstruction = layers.Dense(math.prod(self.input_shape), name="reconstruction")

    def encode(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """``(B, *input_shape)`` -> ``(B, latent_dim)``."""
        x = _check_input(x, self.input_shape, "DenseAutoencoder").reshape((x.shape[0], -1))
        for layer in self.encoder_layers:
            x = layer(x)
        return self.code(x)

    def decode(self, z: jax.Array, *, train: bool = False) -> jax.Array:
        """``(B, latent_dim)`` -> ``(B, *input_shape)``."""
        for layer in self.decoder_layers:
            z = layer(z)
        return self.reconstruction(z).reshape((z.shape[0], *self.input_shape))

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Reconstructs ``x`` through the ``latent_dim`` bottleneck."""
        return self.decode(self.encode(x, train=train), train=train)


class ConvAutoencoder(nn.Module):
    """Stride-2 ReLU convolutions -> Dense code -> Dense -> stride-2 transposed convolutions.

    Each encoder convolution halves height and width; the decoder mirrors it with
    transposed convolutions, so ``H`` and ``W`` must be multiples of ``2**len(filters)``.

    Attributes:
      filters: channels of the encoder convolutions (the decoder mirrors them).
      latent_dim: width of the code.
      input_shape: shape of one image ``(H, W, C)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.models import ConvAutoencoder
      >>> model = ConvAutoencoder(filters=(2,), latent_dim=2, input_shape=(4, 4, 1))
      >>> x = jnp.zeros((5, 4, 4, 1))  # one stride-2 conv: a (2, 2, 2) map, 8 features
      >>> out, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
      >>> out.shape, sum(p.size for p in jax.tree.leaves(variables["params"]))  # 20+18+24+19
      ((5, 4, 4, 1), 81)
      >>> bad = ConvAutoencoder(filters=(2, 4), input_shape=(6, 6, 1))
      >>> bad.init(jax.random.key(0), jnp.zeros((1, 6, 6, 1)))
      Traceback (most recent call last):
      ...
      jaxnets.errors.ConfigError: ... needs H and W divisible by 4, got input_shape=(6, 6, 1). ...
    """

    filters: Sequence[int] = (16, 32)
    latent_dim: int = 16
    input_shape: tuple[int, int, int] = (28, 28, 1)

    task: ClassVar[str] = "reconstruct"

    def example_input(self, batch_size: int = 2, seed: int = 0) -> jax.Array:
        """A float ``(batch_size, H, W, C)`` sample input."""
        return random_input((batch_size, *self.input_shape), seed)

    def setup(self):
        h, w, c = self.input_shape
        if not self.filters:
            raise ConfigError("ConvAutoencoder needs at least one encoder convolution: filters=().")
        scale = 2 ** len(self.filters)
        if h % scale or w % scale:
            raise ConfigError(
                f"ConvAutoencoder with {len(self.filters)} stride-2 layers needs H and W "
                f"divisible by {scale}, got input_shape={self.input_shape}."
            )
        self.bottom = (h // scale, w // scale, self.filters[-1])  # smallest feature map
        self.convs = [
            layers.Conv2D(f, 3, 2, "same", activation="relu", name=f"enc_conv_{i}")
            for i, f in enumerate(self.filters)
        ]
        self.code = layers.Dense(self.latent_dim, name="code")
        self.expand = layers.Dense(math.prod(self.bottom), activation="relu", name="expand")
        # Mirror: back through the encoder widths, ending linear at the input channels.
        widths = [*reversed(self.filters[:-1]), c]
        self.deconvs = [
            layers.Conv2DTranspose(
                f,
                3,
                2,
                "same",
                activation="relu" if i < len(widths) - 1 else None,
                name=f"dec_deconv_{i}",
            )
            for i, f in enumerate(widths)
        ]

    def encode(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """``(B, H, W, C)`` -> ``(B, latent_dim)``."""
        x = _check_input(x, self.input_shape, "ConvAutoencoder")
        for conv in self.convs:
            x = conv(x)
        return self.code(x.reshape((x.shape[0], -1)))

    def decode(self, z: jax.Array, *, train: bool = False) -> jax.Array:
        """``(B, latent_dim)`` -> ``(B, H, W, C)``."""
        x = self.expand(z).reshape((z.shape[0], *self.bottom))
        for deconv in self.deconvs:
            x = deconv(x)
        return x

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Reconstructs ``x`` through the ``latent_dim`` bottleneck."""
        return self.decode(self.encode(x, train=train), train=train)


autoencoder_dense = partial(DenseAutoencoder)
autoencoder_conv = partial(ConvAutoencoder)
