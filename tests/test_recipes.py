"""`jaxnets train --model NAME` for every zoo model: data layout, loss, per-step metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets import cli, data, models, recipes
from jaxnets.errors import ConfigError
from jaxnets.training import create_train_state, eval_step

# Models trained by `fit` on one dataset (GAN parts train as pairs: tests/test_cli_zoo.py).
TRAINABLE = [n for n in models.names() if recipes.gan_pair(n) is None]


@pytest.mark.parametrize("name", models.names())
def test_every_zoo_model_has_a_task_jaxnets_train_knows(name):
    assert recipes.task_of(name) in recipes.TASKS
    assert recipes.default_dataset(name) in data.names()


def test_both_parts_of_a_gan_name_the_same_pair():
    pair = ("dcgan_generator", "dcgan_discriminator")
    assert recipes.gan_pair(pair[0]) == recipes.gan_pair(pair[1]) == pair
    assert recipes.gan_pair("gan_mlp_discriminator")[0] == "gan_mlp_generator"
    assert recipes.gan_pair("mlp") is None


def test_per_step_and_per_example_targets_do_not_mix():
    digits = data.load("digits")
    with pytest.raises(ConfigError, match="needs a label per step"):
        recipes.adapt("gru_tagger", digits)
    x, y = np.zeros((4, 6), np.int32), np.zeros((4, 6), np.int32)  # (n, T) tokens and tags
    tags = data.Dataset(
        x, y, x, y, num_classes=2, input_shape=(6,), task="tagging", name="t", vocab_size=5
    )
    with pytest.raises(ConfigError, match="gru_tagger"):
        recipes.adapt("lstm", tags)
    module = recipes.build("gru_tagger", recipes.adapt("gru_tagger", tags))
    assert (module.vocab_size, module.num_classes, module.input_shape) == (5, 2, (6,))
    assert recipes.loss_and_metrics("gru_tagger", tags)[1] == ("accuracy", "f1_binary")


@pytest.mark.parametrize(
    "name", [n for n in TRAINABLE if recipes.default_dataset(n) in ("digits", "mnist1d")]
)
def test_default_dataset_fits_the_model(name):
    dataset_name = recipes.default_dataset(name)
    ds = recipes.adapt(name, data.load(dataset_name, **recipes.dataset_options(name, dataset_name)))
    module = recipes.build(name, ds)
    x = ds.x_train[:2]
    out = jax.eval_shape(lambda: module.init_with_output(jax.random.key(0), x)[0])
    if models.get(name).task == "reconstruct":
        assert out.shape == x.shape
    elif recipes.is_siamese(name):
        assert ds.x_train.shape[1] == 2 and out.shape == (2, 2)  # pairs -> same/different
    else:
        assert out.shape == (2, ds.num_classes)


def test_language_model_metrics_count_every_step():
    """Per-token accuracy and loss of a (B, T, V) model equal a numpy computation."""
    vocab, steps = 11, 8
    module = models.get("gpt_tiny", vocab_size=vocab)
    tokens = np.random.default_rng(0).integers(0, vocab, size=(5, steps)).astype(np.int32)
    state = create_train_state(module, "adam", tokens[:1], metrics=("accuracy",))
    targets = np.roll(tokens, -1, axis=1)
    mask = np.array([1, 1, 1, 0, 0], np.float32)  # two padded rows
    sums = eval_step(state, {"x": tokens, "y": targets, "mask": jnp.asarray(mask)})
    logits = np.asarray(state.apply_fn(state.variables, tokens, train=False))
    hits = (logits.argmax(-1) == targets)[:3]
    assert float(sums["accuracy"]["count"]) == 3 * steps
    np.testing.assert_allclose(float(sums["accuracy"]["correct"]), hits.sum())
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_p, targets[..., None], -1)[..., 0][:3].mean()
    np.testing.assert_allclose(float(sums["loss"]["total"]) / 3, nll, rtol=1e-5)


def test_train_command_prints_epochs_and_the_test_accuracy(capsys):
    assert cli.main(["train", "--epochs", "8", "--batch-size", "64", "--lr", "3e-3"]) == 0
    out = capsys.readouterr().out
    assert "Epoch 8/8" in out
    accuracy = float(out.split("final test accuracy:")[1].split()[0])
    assert accuracy > 0.9


def test_models_command_lists_the_zoo_with_parameter_counts(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "cnn" in out and "34,826" in out  # the pinned CNN count
    rows = {line.split()[0]: line.split("  ")[-1].strip() for line in out.splitlines()[1:]}
    assert rows["siamese_mlp"] == "digits pairs" and rows["gru_tagger"] == "austen_segmentation"
    assert rows["dcgan_generator"] == "digits"


def test_unknown_model_is_a_clean_cli_error(capsys):
    assert cli.main(["train", "--model", "resnet19"]) == 2
    assert "did you mean 'resnet18'" in capsys.readouterr().err
