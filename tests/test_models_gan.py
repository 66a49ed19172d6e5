"""GANs: generator/discriminator shapes, the pure train step, and the PNG sample grid."""

import builtins

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnets.errors import ConfigError
from jaxnets.models import GANState, gan_train_step, save_sample_grid
from jaxnets.models.gan import (
    dcgan_discriminator_8x8,
    dcgan_generator,
    dcgan_generator_8x8,
    sample_grid,
    write_png,
)


@pytest.fixture(autouse=True)
def fast_random_compiles():
    # Random ops compile ~10x faster without threefry partitioning on CPU.
    with jax.threefry_partitionable(False):
        yield


@pytest.fixture(scope="module")
def setup():
    with jax.threefry_partitionable(False):
        state = GANState.create(
            dcgan_generator_8x8(),
            dcgan_discriminator_8x8(),
            optax.adam(1e-3, b1=0.5),
            optax.adam(1e-3, b1=0.5),
            jax.random.key(0),
        )
        step = jax.jit(gan_train_step)
        real = np.random.default_rng(0).uniform(-1, 1, (8, 8, 8, 1)).astype(np.float32)
        return state, step, {"x": jnp.asarray(real)}


def test_dcgan_shapes():
    gen = dcgan_generator()
    z = gen.example_input(2)
    variables = jax.eval_shape(gen.init, jax.random.key(0), z)
    assert jax.eval_shape(gen.apply, variables, z).shape == (2, 28, 28, 1)
    with pytest.raises(ConfigError, match="multiples of 4"):
        jax.eval_shape(dcgan_generator(image_shape=(10, 10, 1)).init, jax.random.key(0), z)


def test_one_step_changes_both_networks_and_nothing_else(setup):
    state, step, batch = setup
    new, metrics = step(state, batch)
    assert int(new.step) == 1
    for old_p, new_p in ((state.g_params, new.g_params), (state.d_params, new.d_params)):
        changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), old_p, new_p)
        assert all(jax.tree.leaves(changed))  # every leaf of both networks moved
    assert jnp.array_equal(jax.random.key_data(new.key), jax.random.key_data(state.key))
    assert set(metrics) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(np.isfinite(float(v)) for v in metrics.values())
    # The step is pure: the same state and batch give the same result.
    again, _ = step(state, batch)
    np.testing.assert_array_equal(
        jax.tree.leaves(again.g_params)[0], jax.tree.leaves(new.g_params)[0]
    )


def test_discriminator_loss_falls_on_a_fixed_batch(setup):
    state, step, batch = setup
    d_losses = []
    for _ in range(8):
        state, metrics = step(state, batch)
        d_losses.append(float(metrics["d_loss"]))
    assert d_losses[-1] < d_losses[0], d_losses
    assert float(metrics["d_real"]) > float(metrics["d_fake"])  # it tells real from fake


def test_masked_rows_do_not_change_the_step(setup):
    state, step, batch = setup
    mask = jnp.array([1, 1, 1, 1, 0, 0, 0, 0], jnp.float32)
    noisy = batch["x"].at[4:].set(100.0)  # garbage in padded rows
    a, ma = step(state, {"x": batch["x"], "mask": mask})
    b, mb = step(state, {"x": noisy, "mask": mask})
    np.testing.assert_allclose(float(ma["d_loss"]), float(mb["d_loss"]), rtol=1e-6)
    for x, y in zip(jax.tree.leaves(a.d_params), jax.tree.leaves(b.d_params), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_sample_grid_layout():
    images = np.stack([np.full((2, 3, 1), v) for v in (-1.0, 1.0, 0.0)])  # black, white, grey
    grid = sample_grid(images, ncols=2, pad=1)
    assert grid.shape == (2 * 3 + 1, 2 * 4 + 1) and grid.dtype == np.uint8
    assert grid[1, 1] == 0 and grid[1, 5] == 255 and grid[4, 1] in (127, 128)
    assert grid[0].max() == 0  # padding is black


def test_save_sample_grid_writes_a_png_matplotlib_reads(tmp_path):
    image = pytest.importorskip("matplotlib.image")
    images = np.random.default_rng(0).uniform(-1, 1, (5, 8, 8, 1))
    path = save_sample_grid(images, tmp_path / "grid.png")
    pixels = image.imread(path)
    expected = sample_grid(images)
    assert pixels.shape[:2] == expected.shape
    np.testing.assert_allclose(pixels[..., 0] * 255, expected, atol=1)


def test_hand_written_png_fallback_decodes_to_the_same_pixels(tmp_path, monkeypatch):
    image = pytest.importorskip("matplotlib.image")  # an independent PNG decoder
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    images = np.random.default_rng(1).uniform(-1, 1, (4, 5, 6, 3))
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    path = save_sample_grid(images, tmp_path / "rgb.png")
    monkeypatch.undo()
    decoded = image.imread(path)  # (H, W, 3) floats in [0, 1]
    np.testing.assert_array_equal(np.round(decoded * 255).astype(np.uint8), sample_grid(images))

    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    write_png(tmp_path / "gray.png", gray)
    np.testing.assert_array_equal(np.round(image.imread(tmp_path / "gray.png") * 255), gray)
