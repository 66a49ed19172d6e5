"""Siamese networks: one encoder, shared by both inputs of a pair."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets.errors import ShapeError
from jaxnets.models import Siamese

CONFIG = dict(encoder="mlp", hidden=(8,), embed_dim=4, input_shape=(5,))


@pytest.fixture(autouse=True)
def fast_random_compiles():
    # Random ops compile ~10x faster without threefry partitioning on CPU.
    with jax.threefry_partitionable(False):
        yield


@pytest.fixture(scope="module")
def shared():
    with jax.threefry_partitionable(False):
        model = Siamese(**CONFIG)
        pairs = model.example_input(batch_size=6)
        return model, pairs, model.init(jax.random.key(0), pairs)["params"]


def count(tree):
    return sum(x.size for x in jax.tree.leaves(tree))


def test_shared_encoder_weights_exist_once(shared):
    model, pairs, params = shared
    assert sorted(params) == ["encoder", "head"]
    separate = Siamese(**CONFIG, shared=False).init(jax.random.key(0), pairs)["params"]
    assert sorted(separate) == ["encoder_a", "encoder_b", "head"]
    # Sharing saves exactly one encoder's worth of parameters.
    assert count(separate) - count(params) == count(params["encoder"])


def test_shared_gradient_is_the_sum_of_the_two_branch_gradients(shared):
    model, pairs, params = shared
    y = jnp.array([0, 1, 0, 1, 1, 0])

    def loss(model, params):
        logits = model.apply({"params": params}, pairs)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(6), y])

    # Oracle: two separate copies of the encoder holding the same weights.
    two = Siamese(**CONFIG, shared=False)
    copies = {
        "encoder_a": params["encoder"],
        "encoder_b": params["encoder"],
        "head": params["head"],
    }
    np.testing.assert_allclose(loss(model, params), loss(two, copies), rtol=1e-6)
    g_shared = jax.grad(loss, argnums=1)(model, params)
    g_two = jax.grad(loss, argnums=1)(two, copies)
    summed = jax.tree.map(jnp.add, g_two["encoder_a"], g_two["encoder_b"])
    for a, b in zip(jax.tree.leaves(g_shared["encoder"]), jax.tree.leaves(summed), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # ...and not just one branch's share.
    assert not np.allclose(
        jax.tree.leaves(g_shared["encoder"])[0], jax.tree.leaves(g_two["encoder_a"])[0]
    )


def test_pairs_as_array_or_tuple_and_symmetry(shared):
    model, pairs, params = shared
    v = {"params": params}
    stacked = model.apply(v, pairs)
    as_tuple = model.apply(v, (pairs[:, 0], pairs[:, 1]))
    swapped = model.apply(v, (pairs[:, 1], pairs[:, 0]))
    np.testing.assert_allclose(stacked, as_tuple, rtol=1e-6)
    np.testing.assert_allclose(stacked, swapped, rtol=1e-5, atol=1e-6)  # |e1-e2|, e1*e2
    emb = model.apply(v, pairs[:, 0], method="embed")
    assert emb.shape == (6, 4)
    with pytest.raises(ShapeError, match=r"\(B, 2, ...\)"):
        model.apply(v, pairs[:, 0])
