"""Transformer encoder classifier: pre-LN blocks, self-attention, MLP, pooling.

`TransformerBlock` (``x + MHA(LN(x))``, then ``x + MLP(LN(x))``; Xiong et al.
2020, https://arxiv.org/abs/2002.04745) is shared with the causal decoder in
`jaxnets.models.gpt`. `TransformerClassifier` reads ``(B, T, F)`` floats
(projected to ``d_model``) or ``(B, T)`` int tokens (embedded), adds learned or
sinusoidal positions, and pools over the valid steps (mean) or reads a
prepended [CLS] token.

``mask`` ``(B, T)`` (True = valid) keeps padded steps out of every attention and
out of the pooled mean, so a padded step's value never changes the logits.

Example:
  >>> import jax, jax.numpy as jnp
  >>> model = transformer()
  >>> x = model.example_input(batch_size=2)
  >>> variables = jax.eval_shape(model.init, jax.random.key(0), x)  # shapes only
  >>> mask = jnp.arange(16) < jnp.array([[16], [5]])  # row 2: 5 valid steps, then padding
  >>> jax.eval_shape(lambda v: model.apply(v, x, mask=mask), variables).shape
  (2, 10)
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxnets import layers
from jaxnets.errors import ConfigError, ShapeError
from jaxnets.models.recurrent import embed_or_check, random_sequences


def sinusoidal_positions(length: int, dim: int) -> np.ndarray:
    """The fixed ``(length, dim)`` sine/cosine position table of Vaswani et al. 2017.

    Example:
      >>> sinusoidal_positions(3, 4)[0].tolist()
      [0.0, 1.0, 0.0, 1.0]
    """
    pos = np.arange(length)[:, None]
    rates = 1.0 / 10000 ** (np.arange(0, dim, 2) / dim)
    table = np.zeros((length, dim), np.float32)
    table[:, 0::2] = np.sin(pos * rates)
    table[:, 1::2] = np.cos(pos * rates[: dim // 2])
    return table


class TransformerBlock(nn.Module):
    """Pre-LN block: ``x += MHA(LN(x))``, then ``x += MLP(LN(x))``.

    Attributes:
      num_heads: attention heads; each has ``D // num_heads`` dimensions.
      mlp_dim: hidden width of the MLP.
      dropout_rate: dropout on attention weights and on both residual branches.
      causal: let step t attend to steps <= t only (decoders).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.models import TransformerBlock
      >>> block = TransformerBlock(num_heads=2, mlp_dim=8)
      >>> x = jnp.zeros((1, 3, 4))  # (B, T, D): D = 4 splits into 2 heads of 2
      >>> y, variables = jax.eval_shape(block.init_with_output, jax.random.key(0), x)
      >>> # 2 LayerNorms 2 * 8, attention 4 * (4*4+4), MLP (4*8+8) + (8*4+4)
      >>> y.shape, sum(p.size for p in jax.tree.leaves(variables["params"]))
      ((1, 3, 4), 172)
    """

    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    causal: bool = False

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False, mask: jax.Array | None = None
    ) -> jax.Array:
        """``x`` ``(B, T, D)``; ``mask`` ``(B, T)`` hides padded keys (True = valid)."""
        d = x.shape[-1]
        if self.num_heads < 1:
            raise ConfigError(f"num_heads must be >= 1, got {self.num_heads}.")
        if d % self.num_heads:
            raise ConfigError(f"width {d} is not divisible by num_heads={self.num_heads}.")
        h = layers.LayerNormalization(name="ln_attention")(x)
        h = layers.MultiHeadAttention(
            self.num_heads, d // self.num_heads, dropout=self.dropout_rate, name="attention"
        )(h, train=train, mask=mask, use_causal_mask=self.causal)
        x = x + layers.Dropout(self.dropout_rate)(h, train=train)
        h = layers.LayerNormalization(name="ln_mlp")(x)
        h = layers.Dense(self.mlp_dim, activation="gelu", name="mlp_in")(h)
        h = layers.Dense(d, name="mlp_out")(h)
        return x + layers.Dropout(self.dropout_rate)(h, train=train)


class TransformerClassifier(nn.Module):
    """Embedding/projection, positions, pre-LN encoder blocks, final LN, pooling, Dense.

    Attributes:
      num_layers: encoder blocks.
      d_model: width of the residual stream.
      num_heads: attention heads (must divide ``d_model``).
      mlp_dim: hidden width of each block's MLP.
      num_classes: width of the logits.
      max_len: longest sequence (size of the position table).
      positions: 'learned' or 'sinusoidal'.
      pooling: 'mean' over valid steps or 'cls' (a learned token prepended to the sequence).
      vocab_size: if set, int token inputs ``(B, T)`` are embedded.
      dropout_rate: dropout on embeddings, attention weights and residual branches.
      input_shape: shape of one example ``(T, F)`` (or ``(T,)`` for tokens).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.models import TransformerClassifier
      >>> model = TransformerClassifier(
      ...     num_layers=1, d_model=4, num_heads=2, mlp_dim=8, num_classes=3, max_len=8)
      >>> x = jnp.zeros((2, 5, 2))  # 2 sequences of 5 steps, 2 features
      >>> logits, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
      >>> # projection 2*4+4, positions 8*4, one block 172, final LayerNorm 8, logits 4*3+3
      >>> logits.shape, sum(p.size for p in jax.tree.leaves(variables["params"]))
      ((2, 3), 239)
    """

    num_layers: int = 2
    d_model: int = 32
    num_heads: int = 4
    mlp_dim: int = 64
    num_classes: int = 10
    max_len: int = 128
    positions: str = "learned"
    pooling: str = "mean"
    vocab_size: int | None = None
    dropout_rate: float = 0.0
    input_shape: tuple[int, ...] = (16, 8)

    task: ClassVar[str] = "classify"

    def example_input(self, batch_size: int = 2, seed: int = 0) -> jax.Array:
        """A ``(batch_size, *input_shape)`` sample: floats, or int tokens with a vocabulary."""
        return random_sequences(batch_size, self.input_shape, self.vocab_size, seed)

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False, mask: jax.Array | None = None
    ) -> jax.Array:
        """Maps ``(B, T, F)`` floats or ``(B, T)`` tokens to ``(B, num_classes)`` logits."""
        if self.pooling not in ("mean", "cls"):
            raise ConfigError(f"pooling must be 'mean' or 'cls', got {self.pooling!r}.")
        if self.positions not in ("learned", "sinusoidal"):
            raise ConfigError(
                f"positions must be 'learned' or 'sinusoidal', got {self.positions!r}."
            )
        is_tokens = jnp.issubdtype(x.dtype, jnp.integer)
        x = embed_or_check(x, self.vocab_size, self.d_model, "TransformerClassifier")
        if not is_tokens:
            x = layers.Dense(self.d_model, name="input_projection")(x)  # (B, T, D)
        batch, steps = x.shape[:2]
        mask = jnp.ones((batch, steps), bool) if mask is None else jnp.asarray(mask, bool)
        if mask.shape != (batch, steps):
            raise ShapeError(f"mask must have shape {(batch, steps)}, got {tuple(mask.shape)}.")
        if self.pooling == "cls":
            cls = self.param("cls", nn.initializers.normal(0.02), (1, 1, self.d_model))
            x = jnp.concatenate([jnp.broadcast_to(cls, (batch, 1, self.d_model)), x], axis=1)
            mask = jnp.concatenate([jnp.ones((batch, 1), bool), mask], axis=1)
            steps += 1
        if steps > self.max_len:
            raise ShapeError(
                f"sequence length {steps} exceeds max_len={self.max_len}; raise max_len."
            )
        if self.positions == "learned":
            table = self.param(
                "position_embedding", nn.initializers.normal(0.02), (self.max_len, self.d_model)
            )
        else:
            table = jnp.asarray(sinusoidal_positions(self.max_len, self.d_model))
        x = layers.Dropout(self.dropout_rate)(x + table[:steps], train=train)
        for i in range(self.num_layers):
            x = TransformerBlock(
                self.num_heads, self.mlp_dim, self.dropout_rate, name=f"block_{i}"
            )(x, train=train, mask=mask)
        x = layers.LayerNormalization(name="ln_final")(x)
        if self.pooling == "cls":
            pooled = x[:, 0]
        else:
            pooled = layers.GlobalAveragePooling1D()(x, mask=mask)  # mean over valid steps
        return layers.Dense(self.num_classes, name="logits")(pooled)


transformer = partial(TransformerClassifier)
# Text classification: int tokens, sinusoidal positions, [CLS] pooling.
transformer_text = partial(
    TransformerClassifier,
    vocab_size=100,
    positions="sinusoidal",
    pooling="cls",
    input_shape=(16,),
)
