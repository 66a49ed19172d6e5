"""KerasNLP's `TokenAndPositionEmbedding` and `TransformerEncoder`, as Linen layers.

They take KerasNLP's arguments (``keras_nlp.layers``, now ``keras_hub.layers``)
so a Keras text classifier built from them in a ``Sequential`` ports by
changing imports (``from jaxnets.keras import nlp as keras_nlp``). With
``mask_zero=True`` the embedding's padding mask flows through `Sequential` to
the encoder, which keeps padded tokens out of attention, and on to
``GlobalAveragePooling1D``, which averages the valid steps only.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxnets import layers
  >>> from jaxnets.keras import Sequential
  >>> model = Sequential([
  ...     TokenAndPositionEmbedding(100, 8, 16, mask_zero=True, input_shape=(8,)),
  ...     TransformerEncoder(intermediate_dim=32, num_heads=2),
  ...     layers.GlobalAveragePooling1D(),
  ...     layers.Dense(2, activation="softmax")])
  >>> model.predict(jnp.array([[5, 6, 7, 0, 0, 0, 0, 0]])).shape
  (1, 2)
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxnets.errors import ConfigError, ShapeError
from jaxnets.layers import (
    Dense,
    Dropout,
    Layer,
    LayerNormalization,
    MultiHeadAttention,
    initializers,
)


class TokenAndPositionEmbedding(Layer):
    """Token embedding plus a learned position embedding (KerasNLP's layer).

    Attributes:
      vocabulary_size: number of token ids.
      sequence_length: longest sequence (rows of the position table).
      embedding_dim: width of both embeddings.
      mask_zero: token 0 is padding; `compute_mask` marks the other tokens.
    """

    vocabulary_size: int
    sequence_length: int
    embedding_dim: int
    mask_zero: bool = False
    embeddings_initializer: str = "random_uniform"

    @nn.compact
    def __call__(self, tokens, train: bool = False):
        t = tokens.shape[-1]
        if t > self.sequence_length:
            raise ShapeError(
                f"sequences of {t} tokens exceed sequence_length={self.sequence_length}."
            )
        table = self.param(
            "token_embedding",
            initializers.get(self.embeddings_initializer),
            (self.vocabulary_size, self.embedding_dim),
        )
        positions = self.param(
            "position_embedding",
            initializers.get("glorot_uniform"),
            (self.sequence_length, self.embedding_dim),
        )
        return jnp.take(table, tokens.astype(jnp.int32), axis=0) + positions[:t]

    def compute_mask(self, tokens):
        """``(B, T)`` True at real tokens; None unless ``mask_zero``."""
        return (tokens != 0) if self.mask_zero else None


class TransformerEncoder(Layer):
    """One post-LN Transformer encoder block (KerasNLP's ``TransformerEncoder``).

    ``x = LN(x + Dropout(MHA(x)))``, then ``x = LN(x + Dropout(FF(x)))``, with
    ``FF = Dense(hidden)(Dense(intermediate_dim, activation))``; with
    ``normalize_first`` the layer norms move to the start of each branch.

    Attributes:
      intermediate_dim: hidden width of the feed-forward part.
      num_heads: attention heads (must divide the input width).
      dropout: dropout rate on attention weights and both branches.
      activation: of the feed-forward part.
      layer_norm_epsilon: LayerNormalization's epsilon.
      normalize_first: pre-LN instead of post-LN.
    """

    intermediate_dim: int
    num_heads: int
    dropout: float = 0.0
    activation: str = "relu"
    layer_norm_epsilon: float = 1e-5
    normalize_first: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        d = x.shape[-1]
        if d % self.num_heads:
            raise ConfigError(f"input width {d} is not divisible by num_heads={self.num_heads}.")
        ln1 = LayerNormalization(epsilon=self.layer_norm_epsilon, name="attention_norm")
        ln2 = LayerNormalization(epsilon=self.layer_norm_epsilon, name="feedforward_norm")
        h = ln1(x) if self.normalize_first else x
        h = MultiHeadAttention(
            self.num_heads, d // self.num_heads, dropout=self.dropout, name="attention"
        )(h, train=train, mask=mask)
        x = x + Dropout(self.dropout)(h, train=train)
        x = x if self.normalize_first else ln1(x)
        h = ln2(x) if self.normalize_first else x
        h = Dense(self.intermediate_dim, activation=self.activation, name="intermediate")(h)
        h = Dense(d, name="output")(h)
        x = x + Dropout(self.dropout)(h, train=train)
        return x if self.normalize_first else ln2(x)
