"""The battery every registered model passes, and the registry itself.

For each name in ``models.names()``: init on its example input, output shape,
pinned parameter count, jit without retracing, finite gradients, and
overfitting one small batch (loss falls by >= 90% in 100 Adam steps).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnets import models
from jaxnets.errors import ConfigError, UnknownNameError

# Parameter counts ('params' only; BatchNorm running statistics are not parameters).
PARAM_COUNTS = {
    # The generic MLP's defaults are the 784-128-10 network.
    "mlp": 101_770,
    # Dense(784 -> 128): 784*128 + 128 = 100,480; Dense(128 -> 10): 128*10 + 10 = 1,290.
    "mlp_784_128_10": 101_770,
    # 784*64 + 64 = 50,240; 64*64 + 64 = 4,160; 64*10 + 10 = 650.
    "mlp_784_64_64_10": 55_050,
    # 28x28x1 -> Conv(32, 3x3, valid) 26x26x32: 3*3*1*32 + 32 = 320; MaxPool -> 13x13x32
    # -> Conv(64, 3x3, valid) 11x11x64: 3*3*32*64 + 64 = 18,496; MaxPool -> 5x5x64 = 1600
    # -> Dense(10): 1600*10 + 10 = 16,010.  320 + 18,496 + 16,010 = 34,826.
    "cnn": 34_826,
    # Bias-free 3x3 convs + BN (scale, bias): 9*1*32 + 2*32 = 352; 9*32*64 + 2*64 = 18,560;
    # 9*64*128 + 2*128 = 73,984; Dense(128 -> 10) = 1,290.
    "convnet_bn": 94_186,
    # The CIFAR ResNet-18 of kuangliu/pytorch-cifar (3x3 stem, 1x1 projections): 11,173,962.
    "resnet18": 11_173_962,
    # Bias-free convs, each followed by BN (2 params per channel):
    # stem 3*3*3*16 + 32 = 464; stage 1: 3 blocks * 2 * (9*16*16 + 32) = 14,016;
    # stage 2: (9*16*32 + 64) + (9*32*32 + 64) + proj (16*32 + 64) + 2 blocks * 2 * (9*32*32 + 64)
    #   = 4,672 + 9,280 + 576 + 37,120 = 51,648;
    # stage 3: (9*32*64 + 128) + (9*64*64 + 128) + proj (32*64 + 128) + 4 * (9*64*64 + 128)
    #   = 18,560 + 36,992 + 2,176 + 147,968 = 205,696;  Dense(64 -> 10) = 650.
    # 464 + 14,016 + 51,648 + 205,696 + 650 = 272,474 (He et al.'s "0.27M" with option B).
    "resnet20": 272_474,
    "resnet_tiny": 5_266,
    # Conv1D(1 -> 25, k5): 5*1*25 + 25 = 150; Conv1D(25 -> 25, k3): 3*25*25 + 25 = 1,900 (x2);
    # lengths 40 -> 19 -> 10 -> 5, Dense(5*25 -> 10): 125*10 + 10 = 1,260.  Total 5,210.
    "cnn1d": 5_210,
    # SimpleRNN(8 -> 32): 8*32 + 32*32 + 32 = 1,312; Dense(32 -> 10) = 330.
    "rnn": 1_642,
    # LSTM: 4 gates * (8*32 + 32*32 + 32) = 5,248; Dense = 330.
    "lstm": 5_578,
    # Keras GRU (reset_after): 3 * (8*32 + 32*32) + 2 * 3*32 = 4,032; Dense = 330.
    "gru": 4_362,
    # Two LSTMs (5,248 each) and Dense(64 -> 10) = 650.
    "bilstm": 11_146,
    "gru_tagger": 10_698,
    "lstm_text": 11_850,
    "transformer": 21_866,
    "transformer_text": 20_714,
    "gpt_char": 818_048,
    # vocab 24, block 32, width 32, one block, 2 heads of 16, MLP 128:
    # wte 24*32 = 768 (also the output projection: tied) + wpe 32*32 = 1,024
    # + block: 2 LayerNorms 2*64 + q/k/v (32*2*16 + 2*16) * 3 = 3,168 + attention output
    #   2*16*32 + 32 = 1,056 + MLP 32*128 + 128 = 4,224 and 128*32 + 32 = 4,128  (= 12,704)
    # + final LayerNorm 64.  768 + 1,024 + 12,704 + 64 = 14,560.
    "gpt_tiny": 14_560,
    "gan_mlp_generator": 5_378,
    "gan_mlp_discriminator": 4_417,
    "dcgan_generator": 136_801,
    "dcgan_discriminator": 36_513,
    "autoencoder_dense": 103_328,
    # Conv(16, 3x3, s2) 160 + Conv(32, s2) 4,640 -> 7x7x32 = 1,568 -> code Dense(16) 25,104
    # -> Dense(1,568) 26,656 -> ConvT(16) 3*3*32*16 + 16 = 4,624 -> ConvT(1) 145.
    "autoencoder_conv": 61_329,
    "siamese_mlp": 52_450,
    "siamese_cnn": 14_210,
}

# Full-size presets whose compile or training takes many seconds on 2 CPU cores; their
# families run in the quick tier through resnet_tiny and gpt_tiny.
SLOW = {"resnet18", "resnet20", "gpt_char"}

BATCH = 8
STEPS = 100


@pytest.fixture(autouse=True)
def fast_random_compiles():
    """Random ops compile ~10x faster without threefry partitioning on CPU.

    Only initial values change (the key stream differs), which no test here pins.
    """
    with jax.threefry_partitionable(False):
        yield


def _params(names, slow):
    return [pytest.param(n, marks=pytest.mark.slow) if n in slow else n for n in names]


def count_params(tree) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


@functools.cache
def example(name, model, seed=0):
    x = models.example_input(model, batch_size=BATCH, seed=seed)
    if name == "resnet18":
        # Global average pooling makes the count independent of the image size: 16x16
        # keeps every stage (32 -> 16 -> 8 -> 4 -> 2) at a quarter of the CPU time.
        x = x[:, ::2, ::2]
    return x


def built(name):
    """(model, x, variables) with a batch of BATCH examples, built once per session."""
    model = models.get(name)
    x = example(name, model)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    return model, x, variables


def expected_shape(model, x):
    task = model.task
    if task == "classify":
        return (x.shape[0], model.num_classes)
    if task == "tag":
        return (*x.shape[:2], model.num_classes)
    if task == "lm":
        return (*x.shape, model.vocab_size)
    if task == "reconstruct":
        return x.shape
    if task == "generate":
        shape = getattr(model, "output_shape", None) or model.image_shape
        return (x.shape[0], *shape)
    if task == "binary":
        return (x.shape[0],)
    raise AssertionError(f"unknown task {task}")


def make_targets(model, x, out_shape):
    rng = np.random.default_rng(1)
    task = model.task
    if task == "classify":
        return jnp.asarray(rng.integers(0, out_shape[-1], out_shape[0]))
    if task == "tag":
        return jnp.asarray(rng.integers(0, out_shape[-1], out_shape[:-1]))
    if task == "lm":
        return jnp.roll(x, -1, axis=1)  # next token; the last position predicts the first
    if task == "reconstruct":
        return x
    if task == "generate":
        return jnp.asarray(rng.uniform(-0.8, 0.8, out_shape), jnp.float32)
    if task == "binary":
        return jnp.asarray(np.arange(out_shape[0]) % 2, jnp.float32)
    raise AssertionError(f"unknown task {task}")


def loss_fn(task, out, y):
    if task in ("classify", "tag", "lm"):
        return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
    if task in ("reconstruct", "generate"):
        return jnp.mean((out - y) ** 2)
    return optax.sigmoid_binary_cross_entropy(out, y).mean()


@functools.cache
def trainer(name, learning_rate=3e-3):
    """A jitted Adam step ``(params, state, opt_state, x, y, key) -> (..., loss, grads)``."""
    model, x, variables = built(name)
    tx = optax.adam(learning_rate)
    mutable = [k for k in variables if k != "params"]

    def loss(params, state, x, y, key):
        out, new_state = model.apply(
            {"params": params, **state}, x, train=True, rngs={"dropout": key}, mutable=mutable
        )
        return loss_fn(model.task, out, y), new_state

    @jax.jit
    def step(params, state, opt_state, x, y, key):
        (value, new_state), grads = jax.value_and_grad(loss, has_aux=True)(params, state, x, y, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_state, opt_state, value, grads

    return step, tx


def test_every_model_has_a_pinned_parameter_count():
    assert sorted(PARAM_COUNTS) == models.names()


def test_get_unknown_name_lists_valid_names():
    with pytest.raises(UnknownNameError, match="did you mean 'resnet18'") as info:
        models.get("resnet19")
    assert "mlp_784_128_10" in str(info.value)
    with pytest.raises(KeyError):  # UnknownNameError is a KeyError too
        models.get("nope")


def test_get_applies_overrides_and_rejects_unknown_fields():
    assert models.get("cnn", num_classes=3).num_classes == 3
    assert models.get("CNN").num_classes == 10  # names are case-insensitive
    with pytest.raises(ConfigError, match="num_clases"):
        models.get("cnn", num_clases=3)


def test_registry_is_sorted_and_every_entry_names_its_task():
    assert models.names() == sorted(models.MODELS)
    for name in models.names():
        model = models.get(name)
        assert model.task in {"classify", "tag", "lm", "reconstruct", "generate", "binary"}
        assert callable(model.example_input)


@pytest.mark.parametrize("name", _params(models.names(), SLOW))
def test_init_param_count_and_output_shape_without_retrace(name):
    model, x, variables = built(name)
    assert count_params(variables["params"]) == PARAM_COUNTS[name]
    traces = []

    def forward(variables, x):
        traces.append(1)  # runs only while tracing
        return model.apply(variables, x)

    forward = jax.jit(forward)
    out = forward(variables, x)
    x2 = example(name, model, seed=1)
    out2 = forward(variables, x2)
    assert len(traces) == 1
    assert out.shape == out2.shape == expected_shape(model, x)
    assert out.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out)))
    assert not np.allclose(out, out2)  # the output depends on the input


@pytest.mark.parametrize("name", _params(models.names(), SLOW))
def test_gradients_are_finite_and_reach_every_parameter(name):
    model, x, variables = built(name)
    step, tx = trainer(name)
    y = make_targets(model, x, expected_shape(model, x))
    state = {k: v for k, v in variables.items() if k != "params"}
    params = variables["params"]
    *_, loss, grads = step(params, state, tx.init(params), x, y, jax.random.key(0))
    assert np.isfinite(float(loss))
    flat = jax.tree_util.tree_leaves_with_path(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for _, g in flat)
    # Every parameter gets a gradient, except those inside ResNet blocks, which start as
    # the identity (their last BN scale is zero) and so pass no gradient in this first step.
    dead = [jax.tree_util.keystr(p) for p, g in flat if not bool(jnp.any(g != 0))]
    assert all("stage" in d and "bn_1" not in d for d in dead), dead


@pytest.mark.parametrize("name", _params(models.names(), SLOW))
def test_overfits_one_small_batch(name):
    model, x, variables = built(name)
    step, tx = trainer(name)
    y = make_targets(model, x, expected_shape(model, x))
    state = {k: v for k, v in variables.items() if k != "params"}
    params = variables["params"]
    opt_state = tx.init(params)
    losses = []
    for i in range(STEPS):
        params, state, opt_state, loss, _ = step(params, state, opt_state, x, y, jax.random.key(i))
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    assert losses[-1] <= 0.1 * losses[0], (losses[0], losses[-1])
