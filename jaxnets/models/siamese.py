"""Siamese networks: one encoder, shared by both inputs of a pair.

`Siamese` embeds both members of a pair with the **same** encoder (one set of
weights under ``params['encoder']``; Bromley et al. 1993), combines the two
embeddings symmetrically (``|e1 - e2|`` and ``e1 * e2``) and returns
``(B, num_classes)`` logits (class 1 = "same" for verification). Because the
encoder is applied twice, its gradient is the sum of the gradients through
each branch. ``shared=False`` gives each branch its own encoder
(``encoder_a``, ``encoder_b``): the "pseudo-siamese" baseline.

A batch of pairs is an array ``(B, 2, *input_shape)`` (what batching code
slices like any other array) or a tuple ``(x1, x2)``.

Example:
  >>> import jax
  >>> model = siamese_mlp()
  >>> pairs = model.example_input(batch_size=3)
  >>> pairs.shape
  (3, 2, 28, 28, 1)
  >>> variables = jax.jit(model.init)(jax.random.key(0), pairs)
  >>> sorted(variables["params"])
  ['encoder', 'head']
  >>> model.apply(variables, pairs).shape
  (3, 2)
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
from jaxnets.models.cnn import CNN
from jaxnets.models.mlp import MLP, random_input


class Siamese(nn.Module):
    """Shared encoder on both inputs, symmetric combination, Dense logits.

    Attributes:
      encoder: 'mlp' (`MLP` over the flattened input) or 'cnn' (`CNN`, NHWC images).
      hidden: hidden widths of the MLP encoder (conv filters of the CNN encoder).
      embed_dim: width of each embedding.
      num_classes: width of the logits (2: different / same).
      shared: one encoder for both inputs (True) or one each (False).
      input_shape: shape of one member of a pair.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.models import Siamese
      >>> pairs = jnp.zeros((5, 2, 3))  # 5 pairs of 3-vectors
      >>> for shared in (True, False):  # encoder 3*4+4 + 4*2+2 = 26, head 4*2+2 = 10
      ...     model = Siamese(hidden=(4,), embed_dim=2, shared=shared, input_shape=(3,))
      ...     logits, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), pairs)
      ...     params = variables["params"]
      ...     print(logits.shape, sorted(params), sum(p.size for p in jax.tree.leaves(params)))
      (5, 2) ['encoder', 'head'] 36
      (5, 2) ['encoder_a', 'encoder_b', 'head'] 62
    """

    encoder: str = "mlp"
    hidden: Sequence[int] = (64,)
    embed_dim: int = 32
    num_classes: int = 2
    shared: bool = True
    input_shape: tuple[int, ...] = (28, 28, 1)

    task: ClassVar[str] = "classify"

    def example_input(self, batch_size: int = 2, seed: int = 0) -> jax.Array:
        """A float ``(batch_size, 2, *input_shape)`` batch of pairs."""
        return random_input((batch_size, 2, *self.input_shape), seed)

    def setup(self):
        if self.encoder == "mlp":
            make = partial(MLP, features=self.hidden, num_classes=self.embed_dim)
        elif self.encoder == "cnn":
            make = partial(CNN, filters=self.hidden, num_classes=self.embed_dim)
        else:
            raise ConfigError(f"encoder must be 'mlp' or 'cnn', got {self.encoder!r}.")
        if self.shared:
            self.encoder_a = self.encoder_b = make(name="encoder")
        else:
            self.encoder_a = make(name="encoder_a")
            self.encoder_b = make(name="encoder_b")
        self.head = layers.Dense(self.num_classes, name="head")

    def embed(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Embeds single inputs ``(B, *input_shape)`` -> ``(B, embed_dim)`` (first encoder)."""
        return self.encoder_a(x, train=train)

    def __call__(self, pairs, *, train: bool = False) -> jax.Array:
        """Maps pairs ``(B, 2, ...)`` or ``(x1, x2)`` to ``(B, num_classes)`` logits."""
        if isinstance(pairs, tuple | list):
            if len(pairs) != 2:
                raise ShapeError(f"Siamese expects a pair (x1, x2), got {len(pairs)} inputs.")
            x1, x2 = pairs
        else:
            if pairs.ndim < 2 or pairs.shape[1] != 2:
                raise ShapeError(
                    f"Siamese expects pairs of shape (B, 2, ...), got {tuple(pairs.shape)}; "
                    "stack the two inputs with jnp.stack([x1, x2], axis=1) or pass (x1, x2)."
                )
            x1, x2 = pairs[:, 0], pairs[:, 1]
        e1 = self.encoder_a(x1, train=train)  # (B, E)
        e2 = self.encoder_b(x2, train=train)  # (B, E): the same weights when shared
        features = jnp.concatenate([jnp.abs(e1 - e2), e1 * e2], axis=-1)  # symmetric in e1, e2
        return self.head(features)


siamese_mlp = partial(Siamese, encoder="mlp", hidden=(64,), embed_dim=32)
siamese_cnn = partial(Siamese, encoder="cnn", hidden=(8, 16), embed_dim=32)
