"""Keras initializer names mapped to `jax.nn.initializers`.

Keras layers take ``kernel_initializer="glorot_uniform"``; `get` turns such a
name (or a callable, passed through) into a JAX initializer
``init(key, shape, dtype)``. Defaults follow Keras: ``random_normal`` has
stddev 0.05 and ``random_uniform`` the range [-0.05, 0.05].

Example:
  >>> import jax
  >>> from jaxnets.layers import initializers
  >>> initializers.get("zeros")(jax.random.key(0), (2,)).tolist()
  [0.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.nn import initializers as jinit

from jaxnets.errors import lookup


def _uniform(minval: float, maxval: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, minval, maxval)

    return init


_INITIALIZERS = {
    "glorot_uniform": jinit.glorot_uniform(),
    "glorot_normal": jinit.glorot_normal(),
    "he_uniform": jinit.he_uniform(),
    "he_normal": jinit.he_normal(),
    "lecun_uniform": jinit.lecun_uniform(),
    "lecun_normal": jinit.lecun_normal(),
    "orthogonal": jinit.orthogonal(),
    "zeros": jinit.zeros,
    "ones": jinit.ones,
    "random_normal": jinit.normal(0.05),
    "truncated_normal": jinit.truncated_normal(0.05),
    "random_uniform": _uniform(-0.05, 0.05),
}


def get(init: str | Callable) -> Callable:
    """Returns the initializer named ``init``, or ``init`` itself if callable."""
    if callable(init):
        return init
    return lookup(init, _INITIALIZERS, kind="initializer")
