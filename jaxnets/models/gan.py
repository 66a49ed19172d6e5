"""Generative adversarial networks: generators, discriminators, a pure train step.

MLP pairs model vectors (``output_shape=(2,)`` toy mixtures by default);
DCGAN-style pairs (Radford et al. 2015, https://arxiv.org/abs/1511.06434) model
28x28x1 or 8x8x1 images: the generator upsamples a Dense projection with two
stride-2 transposed convolutions, the discriminator downsamples with two
stride-2 convolutions and LeakyReLU. Neither uses BatchNorm, so `GANState`
holds only params and optimizer states. Generators end in ``tanh`` (data in
[-1, 1]); discriminators return one logit per example, shape ``(B,)``.

`gan_train_step` is pure: it updates the discriminator, then the generator
against the updated discriminator with the non-saturating loss
``-log D(G(z))`` (Goodfellow et al. 2014, section 3), drawing noise from
``fold_in(state.key, state.step)``. Jit it where it is called.

The PNG grids of generated samples (`save_sample_grid`, `sample_grid`,
`write_png`) are written by `jaxnets.image_grid`; this module re-exports them.

Example:
  >>> import jax, numpy as np, optax
  >>> state = GANState.create(
  ...     gan_mlp_generator(), gan_mlp_discriminator(), optax.adam(1e-3), optax.adam(1e-3),
  ...     jax.random.key(0))
  >>> real = np.random.default_rng(0).uniform(-1, 1, (4, 2)).astype(np.float32)
  >>> state, metrics = jax.jit(gan_train_step)(state, {"x": real})
  >>> int(state.step), sorted(metrics)
  (1, ['d_fake', 'd_loss', 'd_real', 'g_loss'])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxnets import layers
from jaxnets.errors import ConfigError, ShapeError
from jaxnets.image_grid import (  # noqa: F401  (re-exported: jaxnets.models.gan.<name>)
    sample_grid,
    save_sample_grid,
    write_png,
)
from jaxnets.models.mlp import random_input


class MLPGenerator(nn.Module):
    """Noise ``(B, latent_dim)`` -> ReLU Dense layers -> ``tanh`` -> ``(B, *output_shape)``.

    Attributes:
      latent_dim: size of the noise vector ``z`` (the input's last axis).
      features: widths of the hidden ReLU Dense layers, in order (``()``: none).
      output_shape: per-example shape of a generated sample; the last Dense has
        ``prod(output_shape)`` units, reshaped to it.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.models import MLPGenerator
      >>> model = MLPGenerator(latent_dim=2, features=(4,), output_shape=(3,))
      >>> z = jnp.zeros((5, 2))
      >>> fake, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), z)
      >>> fake.shape, sum(p.size for p in jax.tree.leaves(variables["params"]))  # 2*4+4 + 4*3+3
      ((5, 3), 27)
    """

    latent_dim: int = 16
    features: Sequence[int] = (64, 64)
    output_shape: tuple[int, ...] = (2,)

    task: ClassVar[str] = "generate"

    def example_input(self, batch_size: int = 2, seed: int = 0) -> jax.Array:
        """Standard-normal noise ``(batch_size, latent_dim)``."""
        return random_input((batch_size, self.latent_dim), seed)

    @nn.compact
    def __call__(self, z: jax.Array, *, train: bool = False) -> jax.Array:
        z = _check_noise(z, self.latent_dim, "MLPGenerator")
        for i, width in enumerate(self.features):
            z = layers.Dense(width, activation="relu", name=f"dense_{i}")(z)
        x = layers.Dense(math.prod(self.output_shape), name="output")(z)
        return jnp.tanh(x).reshape((z.shape[0], *self.output_shape))


class MLPDiscriminator(nn.Module):
    """Flattened input -> LeakyReLU Dense layers -> one logit per example ``(B,)``.

    Attributes:
      features: widths of the hidden Dense layers (LeakyReLU, slope 0.2), in order.
      input_shape: per-example shape of the data, used by ``example_input``; the
        call itself flattens whatever ``(B, ...)`` it gets.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.models import MLPDiscriminator
      >>> model = MLPDiscriminator(features=(4,), input_shape=(3,))
      >>> x = jnp.zeros((5, 3))
      >>> logits, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
      >>> logits.shape, sum(p.size for p in jax.tree.leaves(variables["params"]))  # 3*4+4 + 4+1
      ((5,), 21)
    """

    features: Sequence[int] = (64, 64)
    input_shape: tuple[int, ...] = (2,)

    task: ClassVar[str] = "binary"

    def example_input(self, batch_size: int = 2, seed: int = 0) -> jax.Array:
        """A float ``(batch_size, *input_shape)`` sample input."""
        return random_input((batch_size, *self.input_shape), seed)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = jnp.asarray(x, jnp.float32).reshape((x.shape[0], -1))
        for i, width in enumerate(self.features):
            x = layers.Dense(width, activation="leaky_relu", name=f"dense_{i}")(x)  # slope 0.2
        return layers.Dense(1, name="logit")(x)[:, 0]


def _check_noise(z: jax.Array, latent_dim: int, model: str) -> jax.Array:
    """``z`` after checking it is ``(B, latent_dim)`` noise: other widths would build
    (or silently feed) a first layer of another size than ``latent_dim`` says."""
    if z.ndim != 2 or z.shape[1] != latent_dim:
        raise ShapeError(
            f"{model} expects noise of shape (B, latent_dim={latent_dim}), got {tuple(z.shape)}; "
            f"draw it with jax.random.normal(key, (B, {latent_dim})) or set latent_dim."
        )
    return z


def _check_quarter(image_shape: tuple[int, int, int]) -> tuple[int, int]:
    h, w = image_shape[:2]
    if h % 4 or w % 4:
        raise ConfigError(
            f"DCGAN image height and width must be multiples of 4 (two stride-2 layers), "
            f"got image_shape={image_shape}; use e.g. (28, 28, 1) or (8, 8, 1)."
        )
    return h // 4, w // 4


class DCGANGenerator(nn.Module):
    """Noise -> Dense to ``(H/4, W/4, 2f)`` -> ConvT(f, stride 2) -> ConvT(C, stride 2) -> tanh.

    Attributes:
      latent_dim: size of the noise vector ``z`` ``(B, latent_dim)``.
      filters: ``f``, the channels of the first 4x4 transposed convolution; the
        Dense projection has ``2f`` channels.
      image_shape: ``(H, W, C)`` of the generated images; ``H`` and ``W`` must be
        multiples of 4.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.models import DCGANGenerator
      >>> model = DCGANGenerator(latent_dim=2, filters=2, image_shape=(4, 4, 1))
      >>> z = jnp.zeros((5, 2))  # Dense to (1, 1, 4), then 2x2x2, then 4x4x1
      >>> fake, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), z)
      >>> fake.shape, sum(p.size for p in jax.tree.leaves(variables["params"]))  # 12 + 130 + 33
      ((5, 4, 4, 1), 175)
    """

    latent_dim: int = 32
    filters: int = 32
    image_shape: tuple[int, int, int] = (28, 28, 1)

    task: ClassVar[str] = "generate"

    def example_input(self, batch_size: int = 2, seed: int = 0) -> jax.Array:
        """Standard-normal noise ``(batch_size, latent_dim)``."""
        return random_input((batch_size, self.latent_dim), seed)

    @nn.compact
    def __call__(self, z: jax.Array, *, train: bool = False) -> jax.Array:
        h, w = _check_quarter(self.image_shape)
        z = _check_noise(z, self.latent_dim, "DCGANGenerator")
        x = layers.Dense(h * w * 2 * self.filters, activation="relu", name="project")(z)
        x = x.reshape((z.shape[0], h, w, 2 * self.filters))  # (B, H/4, W/4, 2f)
        up = partial(layers.Conv2DTranspose, kernel_size=4, strides=2, padding="same")
        x = up(self.filters, activation="relu", name="deconv_0")(x)  # (B, H/2, W/2, f)
        return up(self.image_shape[2], activation="tanh", name="deconv_1")(x)  # (B, H, W, C)


class DCGANDiscriminator(nn.Module):
    """Image -> Conv(f, stride 2) -> Conv(2f, stride 2), LeakyReLU(0.2) -> Dense logit ``(B,)``.

    Attributes:
      filters: ``f``, the channels of the first 4x4 convolution; the second has ``2f``.
      input_shape: ``(H, W, C)`` of the images, used by ``example_input``; the
        call accepts any ``(B, H, W, C)`` batch.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.models import DCGANDiscriminator
      >>> model = DCGANDiscriminator(filters=2, input_shape=(4, 4, 1))
      >>> x = jnp.zeros((5, 4, 4, 1))  # 4x4x1 -> 2x2x2 -> 1x1x4 -> one logit
      >>> logits, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
      >>> logits.shape, sum(p.size for p in jax.tree.leaves(variables["params"]))  # 34 + 132 + 5
      ((5,), 171)
    """

    filters: int = 32
    input_shape: tuple[int, int, int] = (28, 28, 1)

    task: ClassVar[str] = "binary"

    def example_input(self, batch_size: int = 2, seed: int = 0) -> jax.Array:
        """A float ``(batch_size, H, W, C)`` sample input."""
        return random_input((batch_size, *self.input_shape), seed)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if x.ndim != 4:
            raise ShapeError(f"DCGANDiscriminator expects (B, H, W, C), got {tuple(x.shape)}.")
        down = partial(layers.Conv2D, kernel_size=4, strides=2, padding="same")
        x = down(self.filters, activation="leaky_relu", name="conv_0")(x)  # slope 0.2
        x = down(2 * self.filters, activation="leaky_relu", name="conv_1")(x)
        return layers.Dense(1, name="logit")(layers.Flatten()(x))[:, 0]


gan_mlp_generator = partial(MLPGenerator)
gan_mlp_discriminator = partial(MLPDiscriminator)
dcgan_generator = partial(DCGANGenerator)
dcgan_discriminator = partial(DCGANDiscriminator)
dcgan_generator_8x8 = partial(DCGANGenerator, latent_dim=8, filters=8, image_shape=(8, 8, 1))
dcgan_discriminator_8x8 = partial(DCGANDiscriminator, filters=8, input_shape=(8, 8, 1))


class GANState(struct.PyTreeNode):
    """Everything a GAN step changes, in one pytree; modules and optimizers are static.

    Build it with `GANState.create`.

    Attributes:
      step: int32 scalar, the number of `gan_train_step` calls so far.
      key: the PRNG key; step ``s`` draws its noise from ``fold_in(key, s)``.
      g_params: the generator's ``params``.
      d_params: the discriminator's ``params``.
      g_opt_state: the generator optimizer's state (``g_tx.init(g_params)``).
      d_opt_state: the discriminator optimizer's state (``d_tx.init(d_params)``).
      generator: the generator module (static), with a ``latent_dim`` field.
      discriminator: the discriminator module (static), one logit per example.
      g_tx: the generator's Optax transformation (static).
      d_tx: the discriminator's Optax transformation (static).

    Example:
      >>> import jax, optax
      >>> from jaxnets.models import GANState, MLPDiscriminator, MLPGenerator
      >>> G = MLPGenerator(latent_dim=2, features=(), output_shape=(3,))  # one Dense: 2*3+3
      >>> D = MLPDiscriminator(features=(), input_shape=(3,))  # one Dense: 3+1
      >>> state = GANState.create(G, D, optax.sgd(0.1), optax.sgd(0.1), jax.random.key(0))
      >>> count = lambda params: sum(p.size for p in jax.tree.leaves(params))
      >>> int(state.step), count(state.g_params), count(state.d_params)
      (0, 9, 4)
    """

    step: jax.Array
    key: jax.Array
    g_params: Any
    d_params: Any
    g_opt_state: optax.OptState
    d_opt_state: optax.OptState
    generator: nn.Module = struct.field(pytree_node=False)
    discriminator: nn.Module = struct.field(pytree_node=False)
    g_tx: optax.GradientTransformation = struct.field(pytree_node=False)
    d_tx: optax.GradientTransformation = struct.field(pytree_node=False)

    @classmethod
    def create(cls, generator, discriminator, g_tx, d_tx, key: jax.Array) -> GANState:
        """Initialises both networks (the discriminator on a generated sample), jit-compiled."""
        k_state, g_params, d_params = jax.jit(partial(_init_pair, generator, discriminator))(key)
        return cls(
            step=jnp.zeros((), jnp.int32),
            key=k_state,
            g_params=g_params,
            d_params=d_params,
            g_opt_state=g_tx.init(g_params),
            d_opt_state=d_tx.init(d_params),
            generator=generator,
            discriminator=discriminator,
            g_tx=g_tx,
            d_tx=d_tx,
        )


def _init_pair(generator, discriminator, key):
    k_g, k_d, k_state = jax.random.split(key, 3)
    z = jnp.zeros((1, generator.latent_dim), jnp.float32)
    g_params = generator.init(k_g, z)["params"]
    d_params = discriminator.init(k_d, generator.apply({"params": g_params}, z))["params"]
    return k_state, g_params, d_params


def gan_train_step(state: GANState, batch: dict) -> tuple[GANState, dict]:
    """One discriminator update, then one generator update (non-saturating loss).

    Args:
      state: the `GANState`.
      batch: ``{'x': real data (B, ...), 'mask': optional (B,) float of valid rows}``.

    Returns:
      The new state and ``{'d_loss', 'g_loss', 'd_real', 'd_fake'}`` (mean D probabilities).

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from jaxnets.models import GANState, MLPDiscriminator, MLPGenerator, gan_train_step
      >>> G = MLPGenerator(latent_dim=2, features=(), output_shape=(3,))
      >>> D = MLPDiscriminator(features=(), input_shape=(3,))
      >>> state = GANState.create(G, D, optax.sgd(0.1), optax.sgd(0.1), jax.random.key(0))
      >>> batch = {"x": jnp.zeros((4, 3)), "mask": jnp.array([1.0, 1.0, 1.0, 0.0])}  # 1 padded
      >>> state, metrics = jax.jit(gan_train_step)(state, batch)
      >>> int(state.step), sorted(metrics)
      (1, ['d_fake', 'd_loss', 'd_real', 'g_loss'])
    """
    real = batch["x"]
    n = real.shape[0]
    weight = jnp.asarray(batch.get("mask", jnp.ones((n,))), jnp.float32)
    denom = jnp.maximum(jnp.sum(weight), 1.0)
    z = jax.random.normal(
        jax.random.fold_in(state.key, state.step), (n, state.generator.latent_dim)
    )
    G, D = state.generator, state.discriminator
    fake = G.apply({"params": state.g_params}, z, train=True)

    def d_loss_fn(d_params):
        real_logits = D.apply({"params": d_params}, real, train=True)
        fake_logits = D.apply({"params": d_params}, fake, train=True)
        # -log sigmoid(r) - log(1 - sigmoid(f)) = softplus(-r) + softplus(f)
        loss = jnp.sum(weight * (nn.softplus(-real_logits) + nn.softplus(fake_logits))) / denom
        return loss, (real_logits, fake_logits)

    (d_loss, (real_logits, fake_logits)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
        state.d_params
    )
    d_updates, d_opt_state = state.d_tx.update(d_grads, state.d_opt_state, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)

    def g_loss_fn(g_params):
        logits = D.apply({"params": d_params}, G.apply({"params": g_params}, z, train=True))
        return jnp.sum(weight * nn.softplus(-logits)) / denom  # -log D(G(z))

    g_loss, g_grads = jax.value_and_grad(g_loss_fn)(state.g_params)
    g_updates, g_opt_state = state.g_tx.update(g_grads, state.g_opt_state, state.g_params)
    metrics = {
        "d_loss": d_loss,
        "g_loss": g_loss,
        "d_real": jnp.sum(weight * nn.sigmoid(real_logits)) / denom,
        "d_fake": jnp.sum(weight * nn.sigmoid(fake_logits)) / denom,
    }
    new_state = state.replace(
        step=state.step + 1,
        g_params=optax.apply_updates(state.g_params, g_updates),
        d_params=d_params,
        g_opt_state=g_opt_state,
        d_opt_state=d_opt_state,
    )
    return new_state, metrics
