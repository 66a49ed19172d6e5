"""KerasNLP-style layers: padding is invisible, and the classes are serializable."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets import layers
from jaxnets.errors import ConfigError, ShapeError
from jaxnets.keras import Sequential
from jaxnets.keras.nlp import TokenAndPositionEmbedding, TransformerEncoder
from jaxnets.keras.serialization import from_config, to_config


def _classifier(normalize_first=False):
    return Sequential([
        TokenAndPositionEmbedding(50, 8, 16, mask_zero=True),
        TransformerEncoder(intermediate_dim=32, num_heads=4, normalize_first=normalize_first),
        layers.GlobalAveragePooling1D(),
        layers.Dense(3, activation="softmax"),
    ])  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("normalize_first", [False, True])
def test_padding_does_not_change_the_output(normalize_first):
    model = _classifier(normalize_first)
    padded = jnp.array([[5, 6, 7, 0, 0, 0, 0, 0], [9, 8, 7, 6, 5, 4, 3, 0]])
    variables = model.init(jax.random.key(0), padded)
    full = model.apply(variables, padded)
    short = model.apply(variables, padded[:1, :3])
    np.testing.assert_allclose(full[0], short[0], rtol=1e-5, atol=1e-6)
    # without the mask the padded steps would count
    plain = Sequential([
        TokenAndPositionEmbedding(50, 8, 16),
        TransformerEncoder(intermediate_dim=32, num_heads=4, normalize_first=normalize_first),
        layers.GlobalAveragePooling1D(),
        layers.Dense(3, activation="softmax"),
    ])  # fmt: skip
    unmasked = plain.apply(variables, padded)
    assert not np.allclose(unmasked[0], short[0], atol=1e-4)


def test_checks_and_serialization():
    emb = TokenAndPositionEmbedding(50, 4, 8)
    with pytest.raises(ShapeError, match="sequence_length"):
        emb.init(jax.random.key(0), jnp.zeros((1, 5), jnp.int32))
    enc = TransformerEncoder(intermediate_dim=8, num_heads=3)
    with pytest.raises(ConfigError, match="divisible"):
        enc.init(jax.random.key(0), jnp.zeros((1, 4, 8)))
    model = _classifier()
    assert from_config(to_config(model)) == model
