"""Walking a jaxpr and every jaxpr nested in it (loop bodies, branches, custom rules).

Example:
  >>> import jax, jax.numpy as jnp
  >>> def f(x):
  ...     return jax.lax.fori_loop(0, 3, lambda i, c: c * 2.0, x)
  >>> closed = jax.make_jaxpr(f)(jnp.float32(1.0))
  >>> len(list(nested_jaxprs(closed))) >= 2  # the program and the loop body at least
  True
"""

from __future__ import annotations

from collections.abc import Iterator

from jax.extend import core as jex_core


def nested_jaxprs(closed_jaxpr) -> Iterator:
    """Yields the (open) jaxpr of ``closed_jaxpr`` and every jaxpr nested in its equations."""
    stack = [getattr(closed_jaxpr, "jaxpr", closed_jaxpr)]
    while stack:
        jaxpr = stack.pop()
        yield jaxpr
        for eqn in jaxpr.eqns:
            stack.extend(
                getattr(sub, "jaxpr", sub) for sub in jex_core.jaxprs_in_params(eqn.params)
            )
