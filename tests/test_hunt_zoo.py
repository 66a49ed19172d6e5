"""Bug hunt: the model zoo, transfer learning (per-group rates, freezing patterns,
gradual unfreezing) and the GAN pair, against closed forms and PyTorch's
parameter-group semantics."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets import callbacks, layers, models, optim
from jaxnets.callbacks import Callback
from jaxnets.checkpoint import GradualUnfreezing, freeze_params, load_pretrained
from jaxnets.checkpoint.structure import flatten
from jaxnets.errors import CheckpointError, ConfigError, ShapeError
from jaxnets.training import create_train_state, fit, train_step
from jaxnets.training.step import loss_and_updates

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 6)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int32)
LRS = {"dense_0/.*": 1e-3, ".*": 1e-1}  # body slow, head fast: a ratio of 100


def _mlp_state(optimizer="sgd"):
    model = models.get("mlp", features=(4,), num_classes=2, input_shape=(6,))
    return create_train_state(
        model, optimizer, X[:1], learning_rate=0.1, loss="sparse_categorical_crossentropy"
    )


def _rate(opt_state, label):
    return float(optim.get_hyperparam(opt_state.inner_states[label], "learning_rate"))


# -- per-group learning rates keep their ratio when a callback sets the rate ----------------


def test_setting_the_rate_scales_every_group_by_the_same_factor():
    # What ReduceLROnPlateau(factor=0.5) does: read the rate, write half of it. PyTorch's
    # schedulers scale each parameter group's rate; before the fix every group got the
    # first group's halved rate (the head's step fell from 0.1 to 0.0005, 200x not 2x).
    state = freeze_params(_mlp_state(), optimizer="sgd", learning_rate=LRS)
    rate = optim.get_hyperparam(state.opt_state, "learning_rate")
    assert float(rate) == pytest.approx(1e-3)  # the first group's
    state = state.replace(
        opt_state=optim.set_hyperparam(state.opt_state, "learning_rate", rate / 2)
    )
    batch = {"x": X, "y": Y, "mask": np.ones(len(X), np.float32)}
    new, _ = jax.jit(train_step)(state, batch)
    (_, _), grads = jax.value_and_grad(loss_and_updates, has_aux=True)(
        state.params, state, batch, state.step_key()
    )
    for path, g in flatten(grads).items():
        lr = 0.5 * (1e-3 if path.startswith("dense_0/") else 1e-1)
        delta = flatten(new.params)[path] - flatten(state.params)[path]
        np.testing.assert_allclose(delta, -lr * g, rtol=1e-4, atol=2e-7)  # float32 p + d - p


class _Heads(Callback):
    """The head's kernel at the end of every epoch."""

    def __init__(self):
        super().__init__()
        self.kernels = []

    def on_epoch_end(self, epoch, logs=None):
        self.kernels.append(np.array(self.model.state.params["logits"]["kernel"]))


def test_reduce_lr_on_plateau_keeps_the_groups_ratio():
    state = freeze_params(_mlp_state(), optimizer="sgd", learning_rate=LRS)
    halve = callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=1e9)
    heads = _Heads()
    state, _ = fit(state, (X, Y), epochs=3, batch_size=40, verbose=0, callbacks=[halve, heads])
    # One full batch per epoch; the callback halves the rate after epochs 1 and 2 (epoch 0
    # sets its best), so epoch 2 ran at half epoch 1's rates.
    assert float(optim.get_hyperparam(state.opt_state, "learning_rate")) == pytest.approx(2.5e-4)
    step_1 = np.abs(heads.kernels[1] - heads.kernels[0]).max()
    step_2 = np.abs(heads.kernels[2] - heads.kernels[1]).max()
    # About half as far (the gradient barely changes); the head's rate used to fall from
    # 0.1 to the body's 0.0005, a step 200x shorter.
    assert 0.3 < step_2 / step_1 < 0.8


# -- freeze and unfreeze patterns that select nothing -----------------------------------


def test_a_freeze_pattern_that_matches_nothing_is_an_error():
    state = _mlp_state()
    with pytest.raises(
        ConfigError, match=r"freeze pattern 'dense0/\.\*' matches no parameter.*dense_0/kernel"
    ):
        freeze_params(state, ["dense0/.*"])  # a typo used to train everything silently
    frozen = freeze_params(state, ["dense_0/.*"])  # the right one still works
    assert sorted(frozen.opt_state.inner_states) == ["frozen", "group0"]


def test_an_unfreeze_pattern_that_matches_no_frozen_parameter_is_an_error():
    unfreeze = GradualUnfreezing({1: ["dense0/.*"]}, freeze=["dense_0/.*"], learning_rate=1e-2)
    with pytest.raises(ConfigError, match=r"unfreeze pattern 'dense0/\.\*' \(epoch 1\)"):
        unfreeze.prepare(_mlp_state())


class _RateAtEpoch(Callback):
    """Records each group's learning rate after the other callbacks' on_epoch_begin."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_epoch_begin(self, epoch, logs=None):
        inner = self.model.state.opt_state.inner_states
        self.rates.append({k: _rate(self.model.state.opt_state, k) for k in inner if k != "frozen"})


@pytest.mark.filterwarnings("ignore::jaxnets.compile.RetraceWarning")
def test_unfrozen_layers_join_at_the_current_rate():
    # ReduceLROnPlateau halves the rate after epochs 1 and 2 (0-based; epoch 0 sets its
    # best); the body unfreezes as epoch 3 begins. It joins at the rate the model trains at
    # now (1e-2 / 4), not the configured 1e-2, which used to be 4x the head's.
    unfreeze = GradualUnfreezing({3: ["dense_0/.*"]}, freeze=["dense_0/.*"], learning_rate=1e-2)
    halve = callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=1e9)
    probe = _RateAtEpoch()
    state = unfreeze.prepare(_mlp_state())
    fit(state, (X, Y), epochs=4, batch_size=40, verbose=0, callbacks=[unfreeze, halve, probe])
    assert probe.rates[3]["group0@3"] == pytest.approx(2.5e-3)
    assert probe.rates[3]["group0"] == pytest.approx(2.5e-3)


# -- the zoo: clear errors for impossible configurations --------------------------------


def _init(name, x=None, **fields):
    model = models.get(name, **fields)
    x = model.example_input(2) if x is None else x
    return jax.eval_shape(model.init, jax.random.key(0), x)


@pytest.mark.parametrize(
    ("name", "fields", "x", "error", "match"),
    [
        ("gpt_tiny", {"num_heads": 0}, None, ConfigError, "num_heads must be >= 1, got 0"),
        ("transformer", {"num_heads": 0}, None, ConfigError, "num_heads must be >= 1"),
        ("autoencoder_conv", {"filters": ()}, None, ConfigError, "at least one encoder conv"),
        ("cnn1d", {"kernel_sizes": (5, 3)}, None, ConfigError, r"kernel_sizes=\(5, 3\)"),
        ("convnet_bn", {"strides": (1, 2)}, None, ConfigError, r"strides=\(1, 2\)"),
        # Noise of the wrong width used to build a first layer of that width, silently.
        ("gan_mlp_generator", {}, jnp.zeros((2, 5)), ShapeError, r"latent_dim=16\), got \(2, 5\)"),
        ("dcgan_generator", {}, jnp.zeros((2, 5)), ShapeError, r"latent_dim=32\), got \(2, 5\)"),
    ],
)
def test_impossible_configurations_get_clear_errors(name, fields, x, error, match):
    with pytest.raises(error, match=match):
        _init(name, x, **fields)


def test_gpt_mask_of_the_wrong_shape_is_a_shape_error():
    model = models.get("gpt_tiny")
    tokens = jnp.zeros((2, 8), jnp.int32)
    with pytest.raises(
        ShapeError, match=r"mask must have the tokens' shape \(2, 8\), got \(2, 7\)"
    ):
        jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, mask=jnp.ones((2, 7), bool)))


# -- load_pretrained from what the Keras-style facade saves -----------------------------


def _keras_style_model():
    import jaxnets
    from jaxnets import layers

    model = jaxnets.Sequential(
        [
            layers.Dense(4, activation="relu", input_shape=(6,)),
            layers.BatchNormalization(),
            layers.Dense(2),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(X, Y, epochs=1, batch_size=20, verbose=0)
    return model


def test_load_pretrained_reads_a_saved_keras_style_model(tmp_path):
    # model.save / save_weights folders hold their variables in variables/; load_pretrained
    # used to say "no complete checkpoint" for them, and refused the model object itself.
    model = _keras_style_model()
    model.save(tmp_path / "saved")
    model.save_weights(tmp_path / "weights")
    saved = model._variables()
    for source in (tmp_path / "saved", str(tmp_path / "weights"), model):
        target = create_train_state(model.module, "sgd", X[:1], learning_rate=0.1, seed=3)
        state, report = load_pretrained(target, source)
        assert len(report.loaded) == 8 and not (report.skipped or report.missing or report.unused)
        for path, x in flatten(saved).items():
            got = flatten(state.variables)[path]
            assert got.dtype == x.dtype and np.array_equal(np.asarray(got), np.asarray(x)), path
    with pytest.raises(ConfigError, match="saved model, not a checkpoint"):
        load_pretrained(target, tmp_path / "saved", step=3)


# -- summary counts what the optimizer freezes -------------------------------------------


def test_summary_counts_parameters_frozen_by_the_optimizer_as_non_trainable():
    import jaxnets
    from jaxnets import layers
    from jaxnets.keras.summary import summarize

    model = jaxnets.Sequential(
        [
            layers.Dense(4, activation="relu", input_shape=(6,)),  # 28, frozen until epoch 1
            layers.BatchNormalization(),  # 8 trainable + 8 statistics
            layers.Dense(2, trainable=False),  # 10, frozen the Keras way
            layers.Dense(2),  # 6
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    counts = lambda: (lambda s: (s.trainable_params, s.non_trainable_params))(summarize(model))  # noqa: E731
    assert counts() == (42, 18)  # Keras 3.15 reports 42 / 18 for this model
    unfreeze = GradualUnfreezing(
        {1: ["layers_0/.*"]}, freeze=["layers_0/.*", "layers_2/.*"], learning_rate=1e-2
    )
    model.state = unfreeze.prepare(model.state)
    assert counts() == (14, 46)  # used to say 42 / 18: the frozen Dense counted as trainable
    # The state's optimizer decides: this one freezes the last two Dense layers.
    model.state = freeze_params(model.state, ["layers_2/.*", "layers_3/.*"])
    assert counts() == (36, 24)


def test_gradual_unfreezing_takes_one_freeze_pattern_as_a_string():
    # freeze_params accepts freeze="dense_0/.*"; GradualUnfreezing split the string into
    # one-character patterns, which froze nothing.
    unfreeze = GradualUnfreezing({5: "dense_0/.*"}, freeze="dense_0/.*", learning_rate=1e-2)
    state = unfreeze.prepare(_mlp_state())
    start = np.array(state.params["dense_0"]["kernel"])
    state, _ = fit(state, (X, Y), epochs=1, batch_size=20, verbose=0, callbacks=[unfreeze])
    assert np.array_equal(np.asarray(state.params["dense_0"]["kernel"]), start)


@pytest.mark.parametrize("skip_mismatch", [False, True])
def test_a_source_whose_every_array_has_another_shape_gets_a_shape_error(skip_mismatch):
    # The paths are the same, the widths differ: the error used to say "no pretrained path
    # matches the model" and show two identical path lists.
    def state(width, classes):
        model = models.get("mlp", features=(width,), num_classes=classes, input_shape=(6,))
        return create_train_state(model, "sgd", X[:1], learning_rate=0.1)

    with pytest.raises(CheckpointError) as info:
        load_pretrained(state(5, 3), state(4, 10), skip_mismatch=skip_mismatch)
    message = str(info.value)
    assert "no pretrained array fits the model" in message
    assert "params/dense_0/kernel: saved (6, 4) float32, expected (6, 5) float32" in message


def test_a_nested_sequential_with_an_input_shape_builds_and_summarises_as_keras():
    # Keras builds Sequential([base, Dense(3)]) from base's first input_shape and its
    # summary counts 21 trainable / 926 non-trainable with base frozen; jaxnets said
    # "the model is not built". A long layer label also ran into the next column.
    from jaxnets.keras import Sequential
    from jaxnets.keras.summary import summarize

    base = Sequential([layers.Conv2D(4, 3, input_shape=(8, 8, 1)), layers.BatchNormalization(),
                       layers.Flatten(), layers.Dense(6)])  # fmt: skip
    base.trainable = False
    top = Sequential([base, layers.Dense(3)])
    top.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    info = summarize(top)
    assert (info.trainable_params, info.non_trainable_params) == (21, 926)
    inner = summarize(base)
    assert "(BatchNormalization) " in str(inner)


def test_setting_one_rate_array_on_several_groups_then_training():
    # set_hyperparam gave every group the same buffer; the donated step then failed
    # with "Attempt to donate the same buffer twice".
    x = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)

    class TwoDense(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(2)(nn.relu(nn.Dense(3)(x)))

    state = create_train_state(TwoDense(), "sgd", x[:1])
    state = freeze_params(state, [], optimizer="sgd",
                          learning_rate={"Dense_0/.*": 1e-3, ".*": 1e-1})  # fmt: skip
    state = state.replace(
        opt_state=optim.set_hyperparam(state.opt_state, "learning_rate", jnp.float32(5e-4))
    )
    state, history = fit(state, (x, y), epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history["loss"][0])
