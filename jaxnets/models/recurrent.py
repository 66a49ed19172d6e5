"""Recurrent sequence models: Elman RNN, LSTM and GRU classifiers and taggers.

`RecurrentClassifier` stacks ``num_layers`` recurrent layers (optionally
bidirectional) over ``(B, T, F)`` float sequences or ``(B, T)`` int tokens
(embedded when ``vocab_size`` is set). With ``return_sequences=False`` it reads
the last valid hidden state and returns ``(B, num_classes)`` logits; with
``return_sequences=True`` it returns per-step logits ``(B, T, num_classes)``.

``mask`` ``(B, T)`` (True = valid) marks padded steps: a masked step leaves the
recurrent state unchanged (`jaxnets.layers` semantics), so with right-padded
sequences the classifier reads each row's last valid state and the padding
never reaches its logits. Per-step logits at padded steps are meaningless; mask
them out of the loss.

Example:
  >>> import jax, jax.numpy as jnp
  >>> model = lstm()
  >>> x = model.example_input(batch_size=2)
  >>> x.shape
  (2, 16, 8)
  >>> variables = jax.jit(model.init)(jax.random.key(0), x)
  >>> mask = jnp.arange(16)[None, :] < jnp.array([[16], [9]])
  >>> model.apply(variables, x, mask=mask).shape
  (2, 10)
"""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnets import layers
from jaxnets.errors import ConfigError, DTypeError, ShapeError, lookup
from jaxnets.models.mlp import random_input, random_tokens

CELLS = {"rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}


def random_sequences(
    batch_size: int, input_shape: tuple[int, ...], vocab_size: int | None, seed: int = 0
) -> jax.Array:
    """The sequence models' `example_input`: ``(batch_size, *input_shape)`` floats, or int tokens."""
    shape = (batch_size, *input_shape)
    if vocab_size is not None:
        return random_tokens(shape, vocab_size, seed)
    return random_input(shape, seed)


def embed_or_check(x: jax.Array, vocab_size: int | None, embed_dim: int, model: str) -> jax.Array:
    """Embeds int tokens ``(B, T)`` or checks floats ``(B, T, F)``; returns ``(B, T, F)``.

    Must be called inside a compact method: it creates a `jaxnets.layers.Embedding`
    named 'embed'.
    """
    if jnp.issubdtype(x.dtype, jnp.integer):
        if vocab_size is None:
            raise DTypeError(
                f"{model} got int tokens of shape {tuple(x.shape)} but has no vocab_size; "
                "set vocab_size=<number of tokens> to embed them, or pass (B, T, F) floats."
            )
        if x.ndim != 2:
            raise ShapeError(f"{model} expects int tokens of shape (B, T), got {tuple(x.shape)}.")
        return layers.Embedding(vocab_size, embed_dim, name="embed")(x)
    if x.ndim == 2:
        x = x[..., None]  # (B, T, 1): a univariate series
    if x.ndim != 3:
        raise ShapeError(f"{model} expects sequences of shape (B, T, F), got {tuple(x.shape)}.")
    return jnp.asarray(x, jnp.float32)


class RecurrentClassifier(nn.Module):
    """Stacked (bi)directional RNN/LSTM/GRU layers and a Dense head.

    Attributes:
      cell: 'rnn' (Elman, tanh), 'lstm' or 'gru'.
      hidden_size: units of each recurrent layer (per direction).
      num_layers: recurrent layers stacked; each reads the full output sequence of the last.
      bidirectional: run each layer both ways and concatenate the two outputs.
      return_sequences: per-step logits ``(B, T, C)`` instead of ``(B, C)``.
      num_classes: width of the logits.
      vocab_size: if set, int token inputs ``(B, T)`` are embedded first.
      embed_dim: width of the token embedding.
      dropout_rate: dropout between layers and before the head, in train mode.
      input_shape: shape of one example ``(T, F)`` (or ``(T,)`` for tokens).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.models import RecurrentClassifier
      >>> model = RecurrentClassifier(cell="rnn", hidden_size=2, num_classes=3)
      >>> x = jnp.zeros((5, 7, 4))  # 5 sequences of 7 steps, 4 features
      >>> logits, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
      >>> logits.shape, sum(p.size for p in jax.tree.leaves(variables["params"]))  # 4*2+2*2+2 + 9
      ((5, 3), 23)
      >>> tagger = model.clone(cell="gru", return_sequences=True)  # one class per step
      >>> jax.eval_shape(tagger.init_with_output, jax.random.key(0), x)[0].shape
      (5, 7, 3)
    """

    cell: str = "lstm"
    hidden_size: int = 32
    num_layers: int = 1
    bidirectional: bool = False
    return_sequences: bool = False
    num_classes: int = 10
    vocab_size: int | None = None
    embed_dim: int = 32
    dropout_rate: float = 0.0
    input_shape: tuple[int, ...] = (16, 8)

    @property
    def task(self) -> str:
        """'tag' (a class per step) or 'classify' (a class per sequence)."""
        return "tag" if self.return_sequences else "classify"

    def example_input(self, batch_size: int = 2, seed: int = 0) -> jax.Array:
        """A ``(batch_size, *input_shape)`` sample: floats, or int tokens with a vocabulary."""
        return random_sequences(batch_size, self.input_shape, self.vocab_size, seed)

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False, mask: jax.Array | None = None
    ) -> jax.Array:
        """Maps ``(B, T, F)`` floats or ``(B, T)`` tokens to ``(B, C)`` or ``(B, T, C)`` logits."""
        cell_cls = lookup(self.cell, CELLS, kind="recurrent cell")
        if self.num_layers < 1:
            raise ConfigError(f"num_layers must be >= 1, got {self.num_layers}.")
        x = embed_or_check(x, self.vocab_size, self.embed_dim, "RecurrentClassifier")
        if mask is not None and mask.shape != x.shape[:2]:
            raise ShapeError(f"mask must have shape {x.shape[:2]}, got {tuple(mask.shape)}.")
        for i in range(self.num_layers):
            # Lower layers feed the whole sequence up; the top one returns the last state
            # (B, H) unless per-step outputs are asked for.
            sequences = self.return_sequences or i < self.num_layers - 1
            if self.bidirectional:
                inner = cell_cls(self.hidden_size, return_sequences=sequences, parent=None)
                layer = layers.Bidirectional(inner, name=f"bidirectional_{i}")
            else:
                layer = cell_cls(self.hidden_size, return_sequences=sequences, name=f"rnn_{i}")
            x = layer(x, train=train, mask=mask)  # (B, T, H) or (B, H); x2 H if bidirectional
            if self.dropout_rate > 0:
                x = layers.Dropout(self.dropout_rate)(x, train=train)
        return layers.Dense(self.num_classes, name="logits")(x)


rnn = partial(RecurrentClassifier, cell="rnn")
lstm = partial(RecurrentClassifier, cell="lstm")
gru = partial(RecurrentClassifier, cell="gru")
bilstm = partial(RecurrentClassifier, cell="lstm", bidirectional=True)
# Seq-to-seq: two stacked GRU layers tagging every step.
gru_tagger = partial(RecurrentClassifier, cell="gru", num_layers=2, return_sequences=True)
# Text classification: int tokens from a 100-word vocabulary, embedded.
lstm_text = partial(RecurrentClassifier, cell="lstm", vocab_size=100, input_shape=(16,))
