"""MultiHeadAttention: numpy reference, causal and padding masks by perturbation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets.errors import ConfigError, ShapeError
from jaxnets.layers import MultiHeadAttention

B, T, S, D = 2, 5, 7, 6


@pytest.fixture
def qv(rng):
    q = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(B, S, D)), jnp.float32)
    return q, v


def np_one_head(q, k, v, p, mask=None):
    """softmax(q Wq (k Wk)^T / sqrt(d)) v Wv Wo, with every bias, for one head."""
    proj = lambda x, name: x @ np.asarray(p[name]["kernel"])[:, 0] + np.asarray(p[name]["bias"])[0]
    qh, kh, vh = proj(q, "query"), proj(k, "key"), proj(v, "value")
    logits = qh @ kh.transpose(0, 2, 1) / np.sqrt(qh.shape[-1])
    if mask is not None:
        logits = np.where(mask, logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    out = p["attention_output"]
    return (w @ vh) @ np.asarray(out["kernel"])[0] + np.asarray(out["bias"])


def _random_params(layer, *args):
    v = layer.init(jax.random.key(0), *args)
    leaves, tree = jax.tree.flatten(v)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    # Random biases too, so every bias path is checked against the reference.
    return jax.tree.unflatten(
        tree, [0.5 * jax.random.normal(k, a.shape) for k, a in zip(keys, leaves)]
    )


@pytest.mark.slow
def test_one_head_matches_numpy(qv):
    q, v = qv
    mha = MultiHeadAttention(num_heads=1, key_dim=3)
    params = _random_params(mha, q, v)
    p = params["params"]
    assert p["query"]["kernel"].shape == (D, 1, 3)
    assert p["attention_output"]["kernel"].shape == (1, 3, D)
    want = np_one_head(np.asarray(q), np.asarray(v), np.asarray(v), p)
    np.testing.assert_allclose(mha.apply(params, q, v), want, rtol=1e-4, atol=1e-5)
    # Separate key input, and an explicit (B, T, S) attention mask.
    k = v[:, ::-1] * 2
    mask = np.random.default_rng(1).random((B, T, S)) < 0.7
    mask[..., 0] = True
    want = np_one_head(np.asarray(q), np.asarray(k), np.asarray(v), p, mask)
    got = mha.apply(params, q, v, key=k, attention_mask=jnp.asarray(mask))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_causal_mask_by_perturbation(rng):
    x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    mha = MultiHeadAttention(num_heads=2, key_dim=4)
    params = mha.init(jax.random.key(0), x)
    out = mha.apply(params, x, use_causal_mask=True)
    for t in range(T - 1):
        x2 = x.at[:, t + 1 :].add(jnp.asarray(rng.normal(size=(B, T - t - 1, D)), jnp.float32))
        out2 = mha.apply(params, x2, use_causal_mask=True)
        np.testing.assert_allclose(out2[:, : t + 1], out[:, : t + 1], rtol=1e-5, atol=1e-6)
        assert not np.allclose(out2[:, t + 1 :], out[:, t + 1 :])


@pytest.mark.slow
def test_padding_mask_by_perturbation(qv, rng):
    q, v = qv
    mha = MultiHeadAttention(num_heads=3, key_dim=2)
    params = mha.init(jax.random.key(0), q, v)
    value_mask = jnp.asarray(np.arange(S)[None] < np.array([[4], [6]]))
    out = mha.apply(params, q, v, value_mask=value_mask)
    v2 = jnp.where(
        value_mask[..., None], v, 50.0 * jnp.asarray(rng.normal(size=v.shape), jnp.float32)
    )
    np.testing.assert_allclose(
        mha.apply(params, q, v2, value_mask=value_mask), out, rtol=1e-5, atol=1e-6
    )
    # Self-attention takes the (B, T) sequence mask as the key padding mask.
    mask = value_mask[:, :T]
    self_out = mha.apply(params, q, mask=mask)
    q2 = jnp.where(mask[..., None], q, 9.0)
    np.testing.assert_allclose(
        mha.apply(params, q2, mask=mask)[mask], self_out[mask], rtol=1e-5, atol=1e-6
    )


def test_fully_masked_rows_stay_finite(qv):
    q, v = qv
    mha = MultiHeadAttention(num_heads=2, key_dim=2)
    params = mha.init(jax.random.key(0), q, v)
    out = mha.apply(params, q, v, value_mask=jnp.zeros((B, S), bool))
    assert np.isfinite(out).all()


def test_dropout_and_scores(qv):
    q, v = qv
    mha = MultiHeadAttention(num_heads=2, key_dim=2, dropout=0.5, output_shape=3)
    params = mha.init(jax.random.key(0), q, v)
    out, w = mha.apply(params, q, v, return_attention_scores=True)
    assert out.shape == (B, T, 3) and w.shape == (B, 2, T, S)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
    # eval is deterministic; without scores the normalization comes after the product
    np.testing.assert_allclose(mha.apply(params, q, v), out, rtol=1e-6, atol=1e-6)
    train = mha.apply(params, q, v, train=True, rngs={"dropout": jax.random.key(3)})
    assert not np.allclose(train, out)


def test_errors(qv):
    q, v = qv
    with pytest.raises(ConfigError):
        MultiHeadAttention(num_heads=2, key_dim=2, dropout=1.0)
    mha = MultiHeadAttention(num_heads=2, key_dim=2)
    with pytest.raises(ShapeError, match="value_mask"):
        mha.init(jax.random.key(0), q, v, attention_mask=jnp.ones((B, S), bool))


def _attend_numpy(logits, v):
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return np.einsum("bhts,bshv->bthv", w, v)


@pytest.mark.parametrize("masked", [False, True])
def test_normalizing_after_the_product_matches_softmax_weights(rng, masked):
    # The inference/no-dropout path divides (exp(l - max) @ v) by the row sums; values and
    # gradients must be those of softmax(l) @ v, masked (finfo.min) and fully masked rows too.
    from jaxnets.layers.attention import _softmax_attend

    logits = rng.normal(size=(2, 3, 4, 5)).astype(np.float32) * 3
    v = rng.normal(size=(2, 5, 3, 6)).astype(np.float32)
    if masked:
        logits[:, :, :, -2:] = np.finfo(np.float32).min
        logits[0, 1, 2, :] = np.finfo(np.float32).min  # a fully masked row: uniform weights
    np.testing.assert_allclose(
        _softmax_attend(logits, v), _attend_numpy(logits.astype(np.float64), v), atol=1e-5
    )
    cot = rng.normal(size=(2, 4, 3, 6)).astype(np.float32)
    ours = jax.grad(lambda l, v: jnp.sum(_softmax_attend(l, v) * cot), argnums=(0, 1))
    ref = jax.grad(
        lambda l, v: jnp.sum(jnp.einsum("bhts,bshv->bthv", jax.nn.softmax(l, -1), v) * cot),
        argnums=(0, 1),
    )
    for a, b in zip(ours(logits, v), ref(logits, v)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
