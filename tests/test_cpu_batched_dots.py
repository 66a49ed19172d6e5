"""`jaxnets.cpu_batched_dots`: the rewrite keeps values and moves contractions to the last axes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxnets.cpu_batched_dots import (
    dot_equations,
    eigen_middle_contractions,
    lhs_contracting,
    prefer_ynnpack,
)


def _members_train(params, xs, ys):
    """Three SGD steps of a 2-layer MLP per member (vmapped), in a scan, with a cond and a jit."""

    def loss(p, x, y):
        h = jnp.tanh(x @ p["w1"])
        return jnp.mean((h @ p["w2"] - y) ** 2)

    @jax.jit  # a nested jit: its products are rewritten too
    def step(p, x, y):
        g = jax.grad(loss)(p, x, y)
        ok = jnp.isfinite(loss(p, x, y))
        new = jax.tree.map(lambda a, b: a - 0.1 * b, p, g)
        return lax.cond(ok, lambda: new, lambda: p)

    def member(p, x, y):
        body = lambda p, _: (step(p, x, y), loss(p, x, y))
        return lax.scan(body, p, None, length=3)

    return jax.vmap(member)(params, xs, ys)


def _args(n=4, b=8, f=5, u=3):
    rng = np.random.default_rng(0)
    params = {
        "w1": jnp.asarray(rng.normal(size=(n, f, u)), jnp.float32),
        "w2": jnp.asarray(rng.normal(size=(n, u, 2)), jnp.float32),
    }
    xs = jnp.asarray(rng.normal(size=(n, b, f)), jnp.float32)
    ys = jnp.asarray(rng.normal(size=(n, b, 2)), jnp.float32)
    return params, xs, ys


def _middle_contractions(closed):
    """Batched products whose left operand is contracted on a middle axis."""
    out = []
    for eqn in dot_equations(closed):
        (_, _), (lhs_batch, _) = eqn.params["dimension_numbers"]
        ndim = eqn.invars[0].aval.ndim
        contract = lhs_contracting(eqn)
        if lhs_batch and contract != tuple(range(ndim - len(contract), ndim)):
            out.append(eqn)
    return out


def test_values_and_losses_equal_the_plain_program():
    args = _args()
    want = jax.jit(_members_train)(*args)
    got = jax.jit(prefer_ynnpack(_members_train))(*args)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


def test_every_batched_product_is_contracted_on_trailing_axes_even_in_loops_and_jits():
    args = _args()
    before = _middle_contractions(jax.make_jaxpr(_members_train)(*args))
    assert len(before) >= 2  # the two weight gradients: there is something to rewrite
    after = jax.make_jaxpr(prefer_ynnpack(_members_train))(*args)
    assert _middle_contractions(after) == []


def test_unbatched_products_are_left_alone():
    def grads(w, x):  # one model: Eigen runs its single weight-gradient product well
        return jax.grad(lambda w: jnp.sum(jnp.tanh(x @ w)))(w)

    w, x = jnp.ones((5, 3)), jnp.ones((8, 5))
    plain = [lhs_contracting(e) for e in dot_equations(jax.make_jaxpr(grads)(w, x))]
    rewritten = jax.make_jaxpr(prefer_ynnpack(grads))(w, x)
    assert [lhs_contracting(e) for e in dot_equations(rewritten)] == plain
    assert "optimization_barrier" not in str(rewritten)


def test_outputs_keep_their_pytree_structure():
    f = prefer_ynnpack(lambda d, s: {"sum": d["a"] + s, "pair": (s, d["a"] * 2)})
    out = f({"a": jnp.ones(2)}, jnp.float32(1.0))
    assert set(out) == {"sum", "pair"} and out["pair"][1].tolist() == [2.0, 2.0]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's choice of dot library")
def test_xla_cpu_runs_the_rewritten_weight_gradients_in_ynnpack_not_eigen():
    args = _args(n=16, b=32, f=64, u=32)

    def eigen_batched_dots(fn):
        text = jax.jit(fn).lower(*args).compile().as_text()
        return [line for line in eigen_middle_contractions(text) if "[16,64,32]" in line]

    assert eigen_batched_dots(_members_train)  # the plain program has one (dW1)
    # The barrier on the product's output matters: without it XLA swaps the
    # operands to absorb autodiff's transpose and the contraction moves back.
    assert eigen_batched_dots(prefer_ynnpack(_members_train)) == []
