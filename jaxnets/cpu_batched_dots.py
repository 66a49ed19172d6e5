"""Batched matrix products that XLA:CPU hands to YNNPACK instead of Eigen's loop.

``jax.vmap`` of a weight gradient ``x.T @ dy`` gives a batched product that
contracts the left operand on a middle axis (``(N, B, F) x (N, B, U) ->
(N, F, U)``, contracting ``B``). XLA:CPU's YNNPACK takes batched products only
when the left operand is contracted on its last axes, so this one falls back
to Eigen, which runs it as N small products. Transposing the left operand
first, behind an optimization barrier so that XLA does not fold the transpose
back into the product, lets YNNPACK run it.

On the population benchmark's member (MLP 64-32-10, batch 32, N=16) the two
weight gradients took 39 and 20 us as Eigen products and 25 and 9 us through
YNNPACK, transpose included, and the population's step went from 135 to 101 us
(medians, the two compiled programs timed in turn; jax 0.10, 2 AMD EPYC cores).
Unbatched products are left alone: the same rewrite made an MLP's
``(128, 784)`` weight gradient slower (82 to 111 us), as Eigen runs a single
product well. The rewrite costs one more trace of the program (about 0.1 s of
the benchmark population's first compile).

`prefer_ynnpack` rewrites a function's traced program: every batched
``dot_general`` whose left operand is not contracted on its trailing axes,
including those inside loop bodies, branches and nested ``jit`` calls. The
values are those of the same products in another order of summation (equal to
float32 rounding), so it is meant for programs whose batched products are the
hot path and that are compared with a tolerance: `jaxnets.population` uses it
on the CPU.

Example:
  >>> import jax, jax.numpy as jnp
  >>> weight_grad = jax.vmap(jax.grad(lambda w, x: jnp.sum(jnp.tanh(x @ w))))
  >>> w, x = jnp.ones((4, 3, 2)), jnp.ones((4, 8, 3))
  >>> bool(jnp.allclose(prefer_ynnpack(weight_grad)(w, x), weight_grad(w, x)))
  True
  >>> [lhs_contracting(e) for e in dot_equations(jax.make_jaxpr(weight_grad)(w, x))]
  [(2,), (1,)]
  >>> [lhs_contracting(e) for e in dot_equations(jax.make_jaxpr(prefer_ynnpack(weight_grad))(w, x))]
  [(2,), (2,)]
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import jax
from jax import lax
from jax.extend import core as jex_core

from jaxnets.jaxprs import nested_jaxprs

# Primitives whose ClosedJaxpr parameters are rewritten too; any other
# primitive is bound unchanged, which only leaves its products as they were.
_CONTAINERS = ("jit", "pjit", "scan", "while", "cond", "closed_call")


def lhs_contracting(eqn) -> tuple[int, ...]:
    """The contracted axes of a ``dot_general`` equation's left operand."""
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    return tuple(lhs_contract)


def dot_equations(closed_jaxpr) -> list:
    """Every ``dot_general`` equation of a jaxpr and of the jaxprs nested in it."""
    return [
        eqn
        for jaxpr in nested_jaxprs(closed_jaxpr)
        for eqn in jaxpr.eqns
        if eqn.primitive.name == "dot_general"
    ]


def _lhs_order(eqn) -> list[int] | None:
    """The transpose that puts the left operand in (batch, free, contracted) order, or None."""
    (lhs_contract, _), (lhs_batch, _) = eqn.params["dimension_numbers"]
    if not lhs_batch:
        return None  # unbatched: Eigen runs one product well (see the module docstring)
    ndim = eqn.invars[0].aval.ndim
    free = [d for d in range(ndim) if d not in lhs_contract and d not in lhs_batch]
    order = [*lhs_batch, *free, *lhs_contract]
    return None if order == list(range(ndim)) else order


def _dot_with_trailing_contraction(eqn, order, lhs, rhs):
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
    nb, nc, ndim = len(lhs_batch), len(lhs_contract), len(order)
    # The barrier keeps XLA from folding the transpose back into the product.
    lhs = lax.optimization_barrier(lax.transpose(lhs, order))
    numbers = ((tuple(range(ndim - nc, ndim)), rhs_contract), (tuple(range(nb)), rhs_batch))
    # Output axes are (batch, lhs free, rhs free) either way: the free axes keep their order.
    out = eqn.primitive.bind(lhs, rhs, **{**eqn.params, "dimension_numbers": numbers})
    # A transpose of the output (autodiff ends a weight gradient with one) would
    # otherwise be folded into the product by swapping its operands, which puts
    # a middle-axis contraction back on the left.
    return lax.optimization_barrier(out)


def eigen_middle_contractions(compiled_text: str) -> list[str]:
    """Lines of a compiled XLA:CPU program with a batched product YNNPACK cannot take.

    That is one whose left operand is contracted on axis 1, after one batch
    axis: XLA:CPU runs it as Eigen's loop of small products. `prefer_ynnpack`
    leaves none of them.

    Example:
      >>> line = ("%dot.4 = f32[16,64,32]{2,1,0} dot(%a, %b), lhs_batch_dims={0}, "
      ...         "lhs_contracting_dims={1}, rhs_batch_dims={0}, rhs_contracting_dims={1}")
      >>> len(eigen_middle_contractions(line)), eigen_middle_contractions(line.replace("={1}, rhs_b", "={2}, rhs_b"))
      (1, [])
    """
    return [
        line.strip()
        for line in compiled_text.splitlines()
        if re.search(r"= f32\[\d+(,\d+){2,}\]\{[^}]*\} dot\(", line)
        and "lhs_batch_dims" in line
        and re.search(r"lhs_contracting_dims=\{1\}", line)
    ]


def _struct(aval):
    return jax.ShapeDtypeStruct(aval.shape, aval.dtype, weak_type=aval.weak_type)


def _rewrite_closed(closed):
    """``closed`` traced again through `_evaluate`; unchanged if an input is not an array."""
    if not all(hasattr(a, "shape") and hasattr(a, "weak_type") for a in closed.in_avals):
        return closed
    run = functools.partial(_evaluate, closed.jaxpr, closed.consts)
    return jax.make_jaxpr(lambda *args: run(args))(*map(_struct, closed.in_avals))


def _rewrite_params(eqn) -> dict:
    if eqn.primitive.name not in _CONTAINERS:
        return eqn.params

    def rewrite(value):
        if isinstance(value, jex_core.ClosedJaxpr):
            return _rewrite_closed(value)
        if (
            isinstance(value, tuple)
            and value
            and all(isinstance(v, jex_core.ClosedJaxpr) for v in value)
        ):
            return tuple(map(_rewrite_closed, value))
        return value

    return {name: rewrite(value) for name, value in eqn.params.items()}


def _evaluate(jaxpr, consts, args) -> list:
    """Binds ``jaxpr``'s equations on ``args``, rewriting the batched products."""
    env = {}

    def read(var):
        return var.val if isinstance(var, jex_core.Literal) else env[var]

    env.update(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    for eqn in jaxpr.eqns:
        inputs = [read(v) for v in eqn.invars]
        order = _lhs_order(eqn) if eqn.primitive.name == "dot_general" else None
        if order is not None:
            outputs = [_dot_with_trailing_contraction(eqn, order, *inputs)]
        else:
            # As jax.core.eval_jaxpr binds (custom derivative rules store
            # their parameters in another form than bind takes).
            with eqn.ctx.manager:
                params = eqn.primitive.get_bind_params(_rewrite_params(eqn))
                outputs = eqn.primitive.bind(*inputs, **params)
            outputs = outputs if eqn.primitive.multiple_results else [outputs]
        for var, value in zip(eqn.outvars, outputs, strict=True):
            if not isinstance(var, jex_core.DropVar):
                env[var] = value
    return [read(v) for v in jaxpr.outvars]


def prefer_ynnpack(fn: Callable) -> Callable:
    """``fn`` with its batched products contracting the left operand on its last axes.

    The returned function traces ``fn`` once per call (inside ``jax.jit``:
    once per compile) and binds the rewritten program. Keyword arguments are
    not supported; pass everything positionally.
    """

    @functools.wraps(fn)
    def rewritten(*args):
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        outputs = _evaluate(closed.jaxpr, closed.consts, jax.tree.leaves(args))
        return jax.tree.unflatten(jax.tree.structure(out_shape), outputs)

    return rewritten
