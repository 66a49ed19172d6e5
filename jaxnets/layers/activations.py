"""Activation functions by Keras name.

Each function matches Keras' default arguments, which sometimes differ from
`jax.nn`: Keras ``gelu`` is the exact erf form (``jax.nn.gelu`` defaults to
the tanh approximation) and ``leaky_relu`` has negative slope 0.2.

Example:
  >>> import jax.numpy as jnp
  >>> from jaxnets.layers import activations
  >>> activations.get("relu")(jnp.array([-1.0, 2.0])).tolist()
  [0.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.errors import lookup


def linear(x):
    return x


_SQRT_HALF = np.float32(np.sqrt(0.5))
_INV_SQRT_2PI = np.float32(1 / np.sqrt(2 * np.pi))


def gelu(x):
    """Exact GELU, ``x * Phi(x)`` with ``Phi`` the normal CDF (Keras' and PyTorch's default).

    Written with ``erf``, as PyTorch and TensorFlow write it: XLA:CPU evaluates
    ``erfc`` (`jax.nn.gelu`'s form) piecewise, both pieces for every element, and
    a Transformer step spent 13% of its time there. The derivative
    ``Phi(x) + x * phi(x)`` reuses ``Phi`` (7% more Transformer steps/s).

    Example:
      >>> [round(float(v), 4) for v in gelu(jnp.array([-1.0, 0.0, 2.0]))]
      [-0.1587, 0.0, 1.9545]
    """
    x = jnp.asarray(x)
    return _gelu(x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(jnp.float32))


@jax.custom_jvp
def _gelu(x):
    return x * _normal_cdf(x)


def _normal_cdf(x):
    return 0.5 * (1.0 + jax.lax.erf(x * _SQRT_HALF.astype(x.dtype)))


@_gelu.defjvp
def _gelu_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    cdf = _normal_cdf(x)
    pdf = jnp.exp(-0.5 * x * x) * _INV_SQRT_2PI.astype(x.dtype)
    return x * cdf, (cdf + x * pdf) * t


def leaky_relu(x):
    return jax.nn.leaky_relu(x, negative_slope=0.2)


def softmax(x):
    return jax.nn.softmax(x, axis=-1)


def log_softmax(x):
    return jax.nn.log_softmax(x, axis=-1)


def hard_sigmoid(x):
    # Keras 3 definition: relu6(x + 3) / 6.
    return jax.nn.relu6(x + 3.0) / 6.0


def mish(x):
    return x * jnp.tanh(jax.nn.softplus(x))


def hard_silu(x):
    # Keras 3: x * hard_sigmoid(x), with its relu6(x + 3) / 6.
    return x * hard_sigmoid(x)


def tanh_shrink(x):
    return x - jnp.tanh(x)


def soft_shrink(x, threshold: float = 0.5):
    return jnp.where(x > threshold, x - threshold, jnp.where(x < -threshold, x + threshold, 0.0))


def hard_shrink(x, threshold: float = 0.5):
    return jnp.where(jnp.abs(x) > threshold, x, 0.0)


def squareplus(x, b: float = 4.0):
    return jax.nn.squareplus(x, b)


ACTIVATIONS: dict[str, Callable] = {
    "linear": linear,
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "sigmoid": jax.nn.sigmoid,
    "hard_sigmoid": hard_sigmoid,
    "tanh": jnp.tanh,
    "softmax": softmax,
    "log_softmax": log_softmax,
    "softplus": jax.nn.softplus,
    "softsign": jax.nn.soft_sign,
    "gelu": gelu,
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    "leaky_relu": leaky_relu,
    "swish": jax.nn.silu,
    "silu": jax.nn.silu,
    "mish": mish,
    "exponential": jnp.exp,
    # Keras 3's newer names, with its defaults.
    "hard_silu": hard_silu,
    "hard_swish": hard_silu,
    "log_sigmoid": jax.nn.log_sigmoid,
    "hard_tanh": jax.nn.hard_tanh,
    "celu": jax.nn.celu,
    "glu": jax.nn.glu,
    "tanh_shrink": tanh_shrink,
    "soft_shrink": soft_shrink,
    "hard_shrink": hard_shrink,
    "squareplus": squareplus,
    "sparse_plus": jax.nn.sparse_plus,
}


def get(activation: str | Callable | None) -> Callable:
    """Returns the activation named ``activation``.

    Args:
      activation: a Keras name (case-insensitive), a callable (returned as is),
        or None (the identity, as Keras' ``activation=None``).

    Returns:
      A function from an array to an array of the same shape.

    Raises:
      UnknownNameError: for an unknown name; the message lists valid names.
    """
    if activation is None:
        return linear
    if callable(activation):
        return activation
    return lookup(activation, ACTIVATIONS, kind="activation")
