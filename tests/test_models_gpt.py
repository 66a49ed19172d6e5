"""GPT: tied embedding, causality, and the jit-compiled `generate`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets.errors import ConfigError, DTypeError, ShapeError
from jaxnets.models import GPT, generate
from jaxnets.models.gpt import gpt_tiny


@pytest.fixture(autouse=True)
def fast_random_compiles():
    # Random ops compile ~10x faster without threefry partitioning on CPU.
    with jax.threefry_partitionable(False):
        yield


FORWARD = {}


def forward(model, variables, tokens):
    """``model.apply`` jit-compiled once per model (eager dispatch is slow on CPU)."""
    if model not in FORWARD:
        FORWARD[model] = jax.jit(model.apply)
    return FORWARD[model](variables, tokens)


@pytest.fixture(scope="module")
def tiny():
    with jax.threefry_partitionable(False):
        model = gpt_tiny()
        variables = jax.jit(model.init)(jax.random.key(0), model.example_input(1))
    return model, variables


def test_embedding_is_one_parameter_used_for_input_and_output(tiny):
    model, variables = tiny
    params = variables["params"]
    table = params["wte"]["embedding"]
    assert table.shape == (model.vocab_size, model.d_model)
    # No other matrix maps to the vocabulary: the output projection is the same table.
    vocab_mats = [
        jax.tree_util.keystr(path)
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
        if model.vocab_size in leaf.shape
    ]
    assert vocab_mats == ["['wte']['embedding']"]
    # Oracle: logits are the final LayerNorm output times the embedding table, transposed.
    tokens = model.example_input(2)
    logits, state = model.apply(variables, tokens, capture_intermediates=True)
    hidden = state["intermediates"]["ln_final"]["__call__"][0]  # (B, T, D)
    np.testing.assert_allclose(logits, hidden @ table.T, rtol=1e-5, atol=1e-5)


def test_tied_embedding_gets_gradient_through_the_output_projection(tiny):
    model, variables = tiny
    tokens = model.example_input(2)

    def loss(params):
        return jnp.mean(model.apply({"params": params}, tokens) ** 2)

    grad = jax.jit(jax.grad(loss))(variables["params"])["wte"]["embedding"]
    # Rows of tokens never fed in still get a gradient, through the output projection.
    unused = np.setdiff1d(np.arange(model.vocab_size), np.asarray(tokens))
    assert unused.size > 0
    assert bool(jnp.all(jnp.any(grad[unused] != 0, axis=-1)))


def test_logits_are_causal(tiny):
    model, variables = tiny
    tokens = model.example_input(1)
    changed = tokens.at[0, 5].set((tokens[0, 5] + 1) % model.vocab_size)
    a, b = forward(model, variables, tokens), forward(model, variables, changed)
    np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-6)
    assert not np.allclose(a[:, 5:], b[:, 5:])


def test_bad_inputs_raise_helpful_errors(tiny):
    model, variables = tiny
    with pytest.raises(ShapeError, match="block_size"):
        model.apply(variables, jnp.zeros((1, model.block_size + 1), jnp.int32))
    with pytest.raises(DTypeError, match="int tokens"):
        model.apply(variables, jnp.zeros((1, 4)))
    with pytest.raises(ShapeError, match="prompt_lengths"):
        generate(
            model,
            variables,
            jnp.zeros((1, 2), jnp.int32),
            jax.random.key(0),
            2,
            prompt_lengths=jnp.array([3]),
        )
    with pytest.raises(ConfigError, match="top_k"):
        generate(model, variables, jnp.zeros((1, 2), jnp.int32), jax.random.key(0), 2, top_k=0)


class CountingGPT(GPT):
    """A GPT that counts how often it is traced (a Python side effect runs only then)."""

    def __call__(self, tokens, *, train=False, mask=None):
        TRACES.append(tokens.shape)
        return super().__call__(tokens, train=train, mask=mask)


TRACES = []


def test_generate_traces_once_across_prompts_and_lengths(tiny):
    _, variables = tiny
    model = CountingGPT(**gpt_tiny.keywords)  # the gpt_tiny config, counting traces
    TRACES.clear()
    key = jax.random.key(0)
    out1 = generate(model, variables, jnp.array([[1, 2, 3, 4]]), key, max_new_tokens=6)
    traced = len(TRACES)
    assert traced >= 1
    out2 = generate(
        model,
        variables,
        jnp.array([[5, 6, 7, 0]]),
        key,
        max_new_tokens=6,
        temperature=0.5,
        prompt_lengths=jnp.array([3]),
    )
    out3 = generate(model, variables, jnp.array([[9, 9, 9, 9]]), jax.random.key(1), 6)
    assert len(TRACES) == traced  # new prompts, lengths, temperature and key: no retrace
    assert out1.shape == out2.shape == out3.shape == (1, 10)
    np.testing.assert_array_equal(out1[0, :4], [1, 2, 3, 4])


def test_greedy_decoding_equals_argmax_of_a_full_forward_pass(tiny):
    model, variables = tiny
    prompt = jnp.array([[3, 1, 4, 1], [5, 9, 2, 6]])
    out = generate(model, variables, prompt, jax.random.key(0), max_new_tokens=8, top_k=1)
    logits = forward(model, variables, out)  # (B, 12, V)
    np.testing.assert_array_equal(out[:, 4:], jnp.argmax(logits[:, 3:-1], axis=-1))
    # temperature 0 is greedy too
    cold = generate(model, variables, prompt, jax.random.key(7), 8, temperature=0.0)
    np.testing.assert_array_equal(cold, out)


def test_padded_prompts_continue_from_their_own_length(tiny):
    model, variables = tiny
    padded = jnp.array([[3, 1, 4, 1], [5, 9, 0, 0]])
    out = generate(
        model, variables, padded, jax.random.key(0), 5, top_k=1, prompt_lengths=jnp.array([4, 2])
    )
    alone = generate(model, variables, jnp.array([5, 9]), jax.random.key(0), 5, top_k=1)
    assert alone.shape == (7,)
    np.testing.assert_array_equal(out[1, :7], alone)


def test_generation_past_block_size_uses_the_last_block(tiny):
    model, variables = tiny
    block = model.block_size
    out = generate(model, variables, jnp.array([[1, 2]]), jax.random.key(0), block + 6, top_k=1)
    assert out.shape == (1, block + 8)
    for pos in (block, block + 7):  # tokens written once the buffer outgrew the context
        window = out[:, pos - block : pos]
        expected = jnp.argmax(forward(model, variables, window)[0, -1])
        assert int(out[0, pos]) == int(expected)


def test_sampling_with_top_k_stays_in_the_top_k(tiny):
    model, variables = tiny
    prompt = jnp.array([[1, 2, 3]])
    out = generate(model, variables, prompt, jax.random.key(3), 1, temperature=5.0, top_k=2)
    top2 = jnp.argsort(forward(model, variables, prompt)[0, -1])[-2:]
    assert int(out[0, 3]) in np.asarray(top2).tolist()
