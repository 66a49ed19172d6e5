"""MultiHeadAttention with Keras arguments (self and cross attention).

Parameters match Keras' EinsumDense shapes: ``query``/``key``/``value``
kernels ``(D, num_heads, key_dim)`` with biases ``(num_heads, key_dim)``, and
``attention_output`` kernel ``(num_heads, value_dim, out)``.

Masks are booleans, True = attend. ``attention_mask`` is (B, T, S) or
(B, heads, T, S); ``value_mask`` (B, S) marks the valid (unpadded) keys; in
self-attention ``mask`` (B, T), the jaxnets sequence-mask convention, marks
both the valid keys and the valid queries, as Keras's propagated mask does.
A query row with no key left to attend to (a padded query step, or an
``attention_mask`` row of False) never gives NaN; as in Keras 3, its weights are
zeros (its output the output projection's bias) when the weights are computed,
with ``dropout`` in train mode or ``return_attention_scores``, and uniform over
all keys otherwise (Keras then runs its fused ``dot_product_attention``).

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxnets.layers import MultiHeadAttention
  >>> x = jnp.ones((2, 5, 8))
  >>> mha = MultiHeadAttention(num_heads=2, key_dim=4)
  >>> variables = mha.init(jax.random.key(0), x)
  >>> mha.apply(variables, x, use_causal_mask=True).shape
  (2, 5, 8)
  >>> variables["params"]["query"]["kernel"].shape
  (8, 2, 4)
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxnets.errors import ConfigError, ShapeError
from jaxnets.layers import initializers
from jaxnets.layers.base import Layer


class MultiHeadAttention(Layer):
    """Scaled dot-product attention over ``num_heads`` heads (Keras ``MultiHeadAttention``).

    Attributes:
      num_heads: number of heads.
      key_dim: size of each head's query and key.
      value_dim: size of each head's value; defaults to ``key_dim``.
      dropout: dropout rate on the attention weights (train mode, 'dropout' RNG).
      use_bias: biases on the four projections.
      output_shape: output features; defaults to the query's last dimension.
      kernel_initializer, bias_initializer: Keras names or JAX initializers.
        The kernels default to 'glorot_uniform', the biases to 'zeros'.
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(T, D)``; only `Sequential` reads it, to build from its first layer. Default None.

    Example:
      Cross attention from 3 query steps to 5 value steps; the value steps are
      all equal, so the weights are uniform over the keys ``value_mask`` keeps:

      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.layers import MultiHeadAttention
      >>> mha = MultiHeadAttention(num_heads=2, key_dim=4)
      >>> q, v = jnp.ones((1, 3, 8)), jnp.ones((1, 5, 6))
      >>> variables = mha.init(jax.random.key(0), q, v)
      >>> out, w = mha.apply(variables, q, v, value_mask=jnp.array([[1, 1, 1, 1, 0]]),
      ...                    return_attention_scores=True)
      >>> out.shape, w.shape, w[0, 0, 0].tolist()
      ((1, 3, 8), (1, 2, 3, 5), [0.25, 0.25, 0.25, 0.25, 0.0])
    """

    num_heads: int
    key_dim: int
    value_dim: int | None = None
    dropout: float = 0.0
    use_bias: bool = True
    output_shape: int | None = None
    kernel_initializer: str | Callable = "glorot_uniform"
    bias_initializer: str | Callable = "zeros"

    def __post_init__(self):
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(
                f"MultiHeadAttention dropout must be in [0, 1), got {self.dropout!r}."
            )
        super().__post_init__()

    def _proj(self, features, name, axis=-1):
        return nn.DenseGeneral(
            features,
            axis=axis,
            use_bias=self.use_bias,
            kernel_init=initializers.get(self.kernel_initializer),
            bias_init=initializers.get(self.bias_initializer),
            name=name,
        )

    @nn.compact
    def __call__(
        self,
        query,
        value=None,
        key=None,
        attention_mask=None,
        use_causal_mask: bool = False,
        train: bool = False,
        mask=None,
        value_mask=None,
        return_attention_scores: bool = False,
    ):
        """Attends from ``query`` (B, T, D) to ``value`` (B, S, Dv); returns (B, T, out).

        ``value`` defaults to ``query`` (self-attention) and ``key`` to
        ``value``. ``use_causal_mask`` lets step t see only steps <= t. With
        ``return_attention_scores`` returns ``(output, weights (B, H, T, S))``.

        Args:
          query: ``(B, T, D)`` queries.
          value: ``(B, S, Dv)`` values; None (default) attends ``query`` to itself.
          key: ``(B, S, Dk)`` keys; None (default) uses ``value``.
          attention_mask: bool ``(B, T, S)`` or ``(B, heads, T, S)``, True = attend.
          use_causal_mask: also mask out keys after each query step (``s > t``).
          train: apply attention-weight dropout (needs the 'dropout' RNG).
          mask: ``(B, T)`` sequence mask, True = valid step; in self-attention only
            (``value`` None; ignored otherwise) it is the ``value_mask`` and masks the
            queries too, as Keras's propagated mask does (see the module docstring).
          value_mask: ``(B, S)``, True at valid (unpadded) keys.
          return_attention_scores: also return the softmax weights (before dropout).

        Returns:
          ``(B, T, output_shape or D)`` outputs, or ``(outputs, weights)`` with
          weights ``(B, num_heads, T, S)`` when ``return_attention_scores``.
        """
        query_mask = None
        if value is None:
            value = query
            query_mask = mask  # Keras: a masked query step attends to nothing
            if value_mask is None:
                value_mask = mask
        key = value if key is None else key
        if query.ndim != 3 or value.ndim != 3 or key.ndim != 3:
            raise ShapeError(
                "MultiHeadAttention expects (batch, time, features) query, key and value, "
                f"got {query.shape}, {key.shape}, {value.shape}."
            )
        h, kd = self.num_heads, self.key_dim
        vd = self.value_dim or kd
        q = self._proj((h, kd), "query")(query)  # (B, T, H, K)
        k = self._proj((h, kd), "key")(key)  # (B, S, H, K)
        v = self._proj((h, vd), "value")(value)  # (B, S, H, V)
        # Scale the query, not the logits, as Keras does (same math, fewer flops).
        q = q / jnp.sqrt(jnp.asarray(kd, q.dtype))
        logits = jnp.einsum("bthk,bshk->bhts", q, k)

        allowed = None
        t, s = query.shape[1], key.shape[1]
        if attention_mask is not None:
            am = jnp.asarray(attention_mask).astype(bool)
            if am.ndim == 3:
                am = am[:, None]
            if am.ndim != 4:
                raise ShapeError(
                    f"attention_mask must be (B, T, S) or (B, heads, T, S), got {am.shape}; "
                    "for a (B, S) key padding mask pass value_mask= (or mask= in self-attention)."
                )
            allowed = am
        if value_mask is not None:
            vm = jnp.asarray(value_mask).astype(bool)[:, None, None, :]
            allowed = vm if allowed is None else allowed & vm
        if query_mask is not None:
            qm = jnp.asarray(query_mask).astype(bool)[:, None, :, None]
            allowed = qm if allowed is None else allowed & qm
        if use_causal_mask:
            causal = jnp.tril(jnp.ones((t, s), bool))[None, None]
            allowed = causal if allowed is None else allowed & causal
        attends = None
        if allowed is not None:
            logits = jnp.where(allowed, logits, jnp.finfo(logits.dtype).min)
            # (B, H|1, T, 1): False where a query row has no key left. When Keras needs the
            # weights (dropout or returned scores) it multiplies the softmax by the mask, so
            # such a row gets zero weights there (and uniform ones without; see below).
            attends = jnp.broadcast_to(allowed, (*allowed.shape[:-1], s)).any(-1, keepdims=True)
        dropout = train and self.dropout > 0.0
        weights = None
        if dropout or return_attention_scores:  # the weights themselves are needed
            weights = jax.nn.softmax(logits, axis=-1)  # (B, H, T, S)
            if attends is not None:
                weights = jnp.where(attends, weights, 0.0)
            weights_d = weights
            if dropout:
                shape = weights.shape
                keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.dropout, shape)
                weights_d = jnp.where(keep, weights / (1.0 - self.dropout), 0.0)
            o = jnp.einsum("bhts,bshv->bthv", weights_d, v)
        else:
            # Keras's path without dropout or scores (its dot_product_attention op) leaves a
            # row without keys uniform over all keys; so does this one.
            o = _softmax_attend(logits, v)
        out = self._proj(self.output_shape or query.shape[-1], "attention_output", axis=(-2, -1))(o)
        return (out, weights) if return_attention_scores else out


def _softmax_attend(logits, v):
    """``softmax(logits) @ v`` normalized after the product: ``(exp(l - max) @ v) / sum``.

    Dividing the (B, T, H, V) product instead of the (B, H, T, S) weights saves
    XLA:CPU a pass over the weights and the broadcast of the denominators it
    otherwise keeps for the backward pass. The shift by the row maximum is a
    constant for the gradient, as in `jax.nn.softmax`.
    """
    shift = lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    e = jnp.exp(logits - shift)
    o = jnp.einsum("bhts,bshv->bthv", e, v)
    return o / jnp.sum(e, axis=-1).transpose(0, 2, 1)[..., None]
