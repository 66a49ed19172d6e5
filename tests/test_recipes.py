"""`jaxnets train --model NAME` for every zoo model: data layout, loss, per-step metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets import cli, data, models, recipes
from jaxnets.errors import ConfigError
from jaxnets.training import create_train_state, eval_step

TRAINABLE = [n for n in models.names() if models.get(n).task in ("classify", "lm", "reconstruct")]
TRAINABLE = [n for n in TRAINABLE if "siamese" not in n]


@pytest.mark.parametrize("name", [n for n in models.names() if n not in TRAINABLE])
def test_models_with_their_own_loops_are_refused_with_a_pointer(name):
    with pytest.raises(ConfigError, match="not trained by `jaxnets train`|pairs of inputs"):
        recipes.task_of(name)


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


def test_unknown_model_is_a_clean_cli_error(capsys):
    assert cli.main(["train", "--model", "resnet19"]) == 2
    assert "did you mean 'resnet18'" in capsys.readouterr().err
