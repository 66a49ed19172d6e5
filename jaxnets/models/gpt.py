"""A decoder-only causal language model (GPT) and its jit-compiled sampler.

Radford et al. 2019 with Karpathy's nanoGPT layout: token + learned position
embeddings, pre-LN `TransformerBlock` s under a causal mask, a final LayerNorm,
and logits from the **tied** token embedding (``nn.Embed.attend``: one
``(vocab_size, d_model)`` matrix both embeds and un-embeds; Press & Wolf 2017,
https://arxiv.org/abs/1608.05859).

`generate` samples ``max_new_tokens`` tokens in one compiled ``fori_loop`` over a
fixed-size token buffer, so it compiles once per (model, batch, prompt length,
max_new_tokens, top_k) and never per token or per prompt.

Example:
  >>> import jax, jax.numpy as jnp
  >>> model = gpt_tiny()
  >>> variables = jax.jit(model.init)(jax.random.key(0), model.example_input(1))
  >>> prompt = jnp.array([[1, 2, 3]])
  >>> out = generate(model, variables, prompt, jax.random.key(1), max_new_tokens=4, top_k=1)
  >>> out.shape
  (1, 7)
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxnets import layers
from jaxnets.errors import ConfigError, DTypeError, ShapeError
from jaxnets.models.mlp import random_tokens
from jaxnets.models.transformer import TransformerBlock


class GPT(nn.Module):
    """Causal transformer LM returning next-token logits ``(B, T, vocab_size)``.

    Attributes:
      vocab_size: number of tokens.
      block_size: longest context (size of the position table).
      num_layers: transformer blocks.
      d_model: width of the residual stream (and of the tied embedding).
      num_heads: attention heads (must divide ``d_model``).
      mlp_ratio: MLP hidden width as a multiple of ``d_model``.
      dropout_rate: dropout on embeddings, attention and residual branches, in train mode.
      example_length: length of the `example_input` token sequences.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.models import GPT
      >>> model = GPT(vocab_size=5, block_size=4, num_layers=1, d_model=4, num_heads=2, mlp_ratio=2)
      >>> tokens = jnp.zeros((2, 3), jnp.int32)
      >>> logits, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), tokens)
      >>> logits.shape, sum(p.size for p in jax.tree.leaves(variables["params"]))
      ((2, 3, 5), 216)
      >>> sorted(variables["params"])  # wte 5*4 also un-embeds: no separate output layer
      ['block_0', 'ln_final', 'wpe', 'wte']
    """

    vocab_size: int = 65
    block_size: int = 128
    num_layers: int = 4
    d_model: int = 128
    num_heads: int = 4
    mlp_ratio: int = 4
    dropout_rate: float = 0.0
    example_length: int = 16

    task: ClassVar[str] = "lm"

    def example_input(self, batch_size: int = 2, seed: int = 0) -> jax.Array:
        """Int tokens of shape ``(batch_size, min(example_length, block_size))``."""
        length = min(self.example_length, self.block_size)
        return random_tokens((batch_size, length), self.vocab_size, seed)

    @nn.compact
    def __call__(
        self, tokens: jax.Array, *, train: bool = False, mask: jax.Array | None = None
    ) -> jax.Array:
        """Maps ``(B, T)`` int tokens to ``(B, T, vocab_size)`` logits for the next token.

        ``mask`` ``(B, T)`` (True = valid) hides padded keys from every query.
        """
        if not jnp.issubdtype(tokens.dtype, jnp.integer) or tokens.ndim != 2:
            raise DTypeError(
                f"GPT expects int tokens of shape (B, T), got {tokens.dtype} {tuple(tokens.shape)}."
            )
        steps = tokens.shape[1]
        if mask is not None and tuple(mask.shape) != tuple(tokens.shape):
            raise ShapeError(
                f"mask must have the tokens' shape {tuple(tokens.shape)}, got {tuple(mask.shape)}."
            )
        if steps > self.block_size:
            raise ShapeError(
                f"GPT got {steps} tokens but block_size={self.block_size}; "
                "crop the context to the last block_size tokens or raise block_size."
            )
        wte = nn.Embed(
            self.vocab_size, self.d_model, embedding_init=nn.initializers.normal(0.02), name="wte"
        )
        wpe = self.param("wpe", nn.initializers.normal(0.02), (self.block_size, self.d_model))
        x = wte(tokens) + wpe[:steps]  # (B, T, D)
        x = layers.Dropout(self.dropout_rate)(x, train=train)
        for i in range(self.num_layers):
            x = TransformerBlock(
                self.num_heads,
                self.mlp_ratio * self.d_model,
                self.dropout_rate,
                causal=True,
                name=f"block_{i}",
            )(x, train=train, mask=mask)
        x = layers.LayerNormalization(name="ln_final")(x)
        return wte.attend(x)  # (B, T, V): the output projection is wte's matrix


# Character-level LM (Shakespeare has 65 characters), about 0.8M parameters.
gpt_char = partial(GPT, vocab_size=65, block_size=128, num_layers=4, d_model=128, num_heads=4)
# Tiny preset for tests.
gpt_tiny = partial(
    GPT, vocab_size=24, block_size=32, num_layers=1, d_model=32, num_heads=2, example_length=8
)


def sample_logits(
    key: jax.Array, logits: jax.Array, temperature: jax.Array | float, top_k: int | None
) -> jax.Array:
    """Samples one token per row of ``logits`` ``(B, V)``; temperature <= 0 is greedy.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> sample_logits(jax.random.key(0), jnp.array([[0.0, 3.0, 1.0]]), 1.0, top_k=1).tolist()
      [1]
    """
    logits = logits.astype(jnp.float32)
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # (B, 1): k-th largest logit
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    temperature = jnp.asarray(temperature, jnp.float32)
    sampled = jax.random.categorical(key, logits / jnp.maximum(temperature, 1e-6), axis=-1)
    return jnp.where(temperature > 0, sampled, jnp.argmax(logits, axis=-1)).astype(jnp.int32)


@partial(jax.jit, static_argnames=("model", "max_new_tokens", "top_k"))
def _generate(model, variables, prompt, lengths, key, temperature, *, max_new_tokens, top_k):
    batch, prompt_len = prompt.shape
    total = prompt_len + max_new_tokens
    context = min(total, model.block_size)
    buffer = jnp.zeros((batch, total), jnp.int32).at[:, :prompt_len].set(prompt)
    rows = jnp.arange(batch)

    def step(i, carry):
        buffer, pos = carry  # pos (B,): where each row writes its next token
        # The last `context` tokens before pos: a fixed-size window, so no shape changes.
        start = jnp.clip(pos - context, 0, total - context)
        window = jax.vmap(lambda row, s: jax.lax.dynamic_slice(row, (s,), (context,)))(
            buffer, start
        )
        logits = model.apply(variables, window)  # (B, context, V)
        last = logits[rows, pos - 1 - start]  # (B, V)
        token = sample_logits(jax.random.fold_in(key, i), last, temperature, top_k)
        return buffer.at[rows, pos].set(token), pos + 1

    buffer, _ = jax.lax.fori_loop(0, max_new_tokens, step, (buffer, lengths))
    return buffer


def generate(
    model: GPT,
    params: Any,
    prompt: jax.Array,
    key: jax.Array,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    prompt_lengths: jax.Array | None = None,
) -> jax.Array:
    """Extends ``prompt`` by ``max_new_tokens`` sampled tokens (jit-compiled, one trace).

    Args:
      model: a `GPT` (any module mapping ``(B, T)`` tokens to ``(B, T, V)`` logits with a
        ``block_size`` field).
      params: the model's variables ``{'params': ...}`` or the params tree itself.
      prompt: int tokens ``(B, P)`` or ``(P,)``. Rows shorter than ``P`` are right-padded
        and give their lengths in ``prompt_lengths``.
      key: PRNG key; step ``i`` samples with ``fold_in(key, i)``.
      max_new_tokens: number of tokens to append (static: a new value compiles again).
      temperature: softmax temperature; ``<= 0`` picks the argmax.
      top_k: sample among the ``top_k`` most likely tokens only (static); 1 is greedy.
      prompt_lengths: ``(B,)`` valid length of each prompt row (default ``P``); traced,
        so prompts of different lengths padded to the same ``P`` share one compilation.

    Returns:
      Int tokens ``(B, P + max_new_tokens)`` (``(P + max_new_tokens,)`` for a 1-D prompt):
      row ``b`` holds its prompt, then its new tokens from ``prompt_lengths[b]`` on;
      its last ``P - prompt_lengths[b]`` positions are left over (they hold what was
      there: the prompt's padding or zeros), so read ``max_new_tokens`` tokens from
      ``prompt_lengths[b]``.
      When the buffer outgrows ``block_size`` the model sees the last ``block_size`` tokens.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.models import GPT, generate
      >>> model = GPT(vocab_size=5, block_size=4, num_layers=1, d_model=4, num_heads=2, mlp_ratio=2)
      >>> variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
      >>> prompt = jnp.array([[1, 2, 3], [4, 0, 0]])  # row 2 holds 1 token, then padding
      >>> out = generate(model, variables, prompt, jax.random.key(1), max_new_tokens=2,
      ...                top_k=1, prompt_lengths=jnp.array([3, 1]))
      >>> out.shape, out[0, :3].tolist(), out[1, :1].tolist()  # new tokens follow each prompt
      ((2, 5), [1, 2, 3], [4])
    """
    prompt = jnp.asarray(prompt)
    if not jnp.issubdtype(prompt.dtype, jnp.integer) or prompt.ndim not in (1, 2):
        raise DTypeError(
            f"prompt must be int tokens of shape (B, P) or (P,), got {prompt.dtype} "
            f"{tuple(prompt.shape)}."
        )
    squeeze = prompt.ndim == 1
    prompt = jnp.atleast_2d(prompt).astype(jnp.int32)
    if prompt.shape[1] < 1:
        raise ShapeError("prompt must hold at least one token per row.")
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    if top_k is not None and not 1 <= top_k <= model.vocab_size:
        raise ConfigError(f"top_k must be in [1, vocab_size={model.vocab_size}], got {top_k}.")
    if prompt_lengths is None:
        lengths = jnp.full((prompt.shape[0],), prompt.shape[1], jnp.int32)
    else:
        lengths = jnp.asarray(prompt_lengths, jnp.int32).reshape(prompt.shape[0])
        if not isinstance(lengths, jax.core.Tracer):
            bad = np.asarray(lengths)
            if bad.min() < 1 or bad.max() > prompt.shape[1]:
                raise ShapeError(
                    f"prompt_lengths must lie in [1, {prompt.shape[1]}] (the padded prompt "
                    f"length), got {bad.tolist()}."
                )
    variables = params if isinstance(params, Mapping) and "params" in params else {"params": params}
    out = _generate(
        model,
        variables,
        prompt,
        lengths,
        key,
        jnp.asarray(temperature, jnp.float32),
        max_new_tokens=int(max_new_tokens),
        top_k=top_k,
    )
    return out[0] if squeeze else out
