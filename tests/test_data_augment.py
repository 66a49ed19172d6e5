"""Keyed image augmentation: involution, crop windows, batch-split independence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets.data.augment import augment_images, random_crop, random_flip, random_shift
from jaxnets.errors import ConfigError, ShapeError


@pytest.fixture(scope="module")
def images():
    return jnp.asarray(np.random.default_rng(0).normal(size=(8, 6, 5, 2)), jnp.float32)


def test_flip_of_flip_is_identity_per_example(images):
    key = jax.random.key(3)
    once = random_flip(key, images)
    assert np.array_equal(random_flip(key, once), images)
    # Each example is either untouched or exactly mirrored along W, and both happen.
    flipped = [bool(np.array_equal(once[i], images[i, :, ::-1])) for i in range(8)]
    kept = [bool(np.array_equal(once[i], images[i])) for i in range(8)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert any(flipped) and any(kept)


def test_vertical_flip_and_probabilities(images):
    key = jax.random.key(0)
    assert np.array_equal(random_flip(key, images, prob=1.0, vertical=True), images[:, ::-1])
    assert np.array_equal(random_flip(key, images, prob=0.0), images)


def _windows(image, pad):
    padded = np.pad(np.asarray(image), ((pad, pad), (pad, pad), (0, 0)))
    h, w = image.shape[:2]
    return {
        (top, left): padded[top : top + h, left : left + w]
        for top in range(2 * pad + 1)
        for left in range(2 * pad + 1)
    }


def test_crop_keeps_shape_and_is_a_window_of_the_padded_image(images):
    out = random_crop(jax.random.key(1), images, padding=2)
    assert out.shape == images.shape and out.dtype == images.dtype
    offsets = set()
    for i in range(len(images)):
        hits = [o for o, win in _windows(images[i], 2).items() if np.array_equal(win, out[i])]
        assert hits, f"example {i} is not a crop of its padded image"
        offsets.add(hits[0])
    assert len(offsets) > 1  # per-example offsets, not one shared offset


def test_crop_modes_and_shift(images):
    key = jax.random.key(2)
    edge = random_crop(key, images, padding=(1, 3), mode="edge")
    assert edge.shape == images.shape
    assert np.array_equal(random_shift(key, images, 2), random_crop(key, images, 2))
    with pytest.raises(ConfigError):
        random_crop(key, images, mode="mirror")
    with pytest.raises(ConfigError):
        random_crop(key, images, padding=-1)


@pytest.mark.parametrize("fn", [random_flip, random_crop, augment_images])
def test_result_does_not_depend_on_batch_split(fn, images):
    key = jax.random.key(7)
    whole = fn(key, images, indices=jnp.arange(8))
    first = fn(key, images[:4], indices=jnp.arange(4))
    second = fn(key, images[4:], indices=jnp.arange(4, 8))
    assert np.array_equal(whole, jnp.concatenate([first, second]))
    # Without the global indices the second half would reuse keys 0..3.
    assert np.array_equal(fn(key, images), whole)


def test_legacy_uint32_keys_work(images):
    out = random_flip(jax.random.PRNGKey(0), images)
    assert out.shape == images.shape


def test_shape_errors(images):
    key = jax.random.key(0)
    with pytest.raises(ShapeError, match="NHWC"):
        random_flip(key, images[0])
    with pytest.raises(ShapeError, match="indices"):
        random_crop(key, images, indices=jnp.arange(3))
