"""How a zoo model meets a dataset: default data, input layout, loss and metrics.

``jaxnets train --model NAME`` needs no other flag: each model's ``task``
(``classify``, ``lm``, ``reconstruct``, ``tag``...) picks the loss and metrics,
and the model name picks a dataset that fits it (images for the CNNs, sequences
for the recurrent models, the Austen corpus for language models, Austen without
its spaces for the tagger). Siamese models get same/different pairs drawn from
their dataset (`jaxnets.data.pairs`); GAN parts train as a generator and
discriminator pair (`gan_pair`, run by `jaxnets.gan_runner`).

Example:
  >>> default_dataset("cnn1d"), dataset_options("lstm", "mnist1d")
  ('mnist1d', {'as_sequence': True})
  >>> gan_pair("dcgan_discriminator"), default_dataset("gru_tagger")
  (('dcgan_generator', 'dcgan_discriminator'), 'austen_segmentation')
"""

from __future__ import annotations

import dataclasses

import jax

from jaxnets import models as models_lib
from jaxnets.data import datasets as datasets_lib
from jaxnets.data import pairs as pairs_lib
from jaxnets.errors import ConfigError
from jaxnets.models.siamese import Siamese

# Models whose natural data is not the default digits.
_DEFAULT_DATASET = {
    "cnn": "fashion_mnist",  # two 'valid' 3x3 convs and two pools need >= 10x10 images
    "cnn1d": "mnist1d",
    "rnn": "mnist1d",
    "lstm": "mnist1d",
    "gru": "mnist1d",
    "bilstm": "mnist1d",
    "transformer": "mnist1d",
    "lstm_text": "austen",
    "transformer_text": "austen",
    "gpt_char": "austen",
    "gpt_tiny": "austen",
    "gru_tagger": "austen_segmentation",  # a label per character: does it begin a word?
    "siamese_cnn": "fashion_mnist",  # its CNN encoder, like `cnn`, needs >= 10x10 images
}

# Generator and discriminator of each GAN family: either name trains the pair.
GAN_PAIRS = {
    "gan_mlp": ("gan_mlp_generator", "gan_mlp_discriminator"),
    "dcgan": ("dcgan_generator", "dcgan_discriminator"),
}

# The tasks `jaxnets train` knows; a model with another task is refused.
TASKS = ("classify", "lm", "reconstruct", "tag", "generate", "binary")


def gan_pair(model: str) -> tuple[str, str] | None:
    """``(generator, discriminator)`` names of a GAN part's family, None for other models."""
    name = model.lower()
    return next((pair for pair in GAN_PAIRS.values() if name in pair), None)


def is_siamese(model: str) -> bool:
    """Whether ``model`` takes pairs of inputs (and so trains on pairs of its dataset)."""
    return isinstance(models_lib.get(model), Siamese)


def default_dataset(model: str) -> str:
    """The dataset ``jaxnets train --model MODEL`` uses when ``--dataset`` is not given."""
    return _DEFAULT_DATASET.get(model.lower(), "digits")


def default_dataset_label(model: str) -> str:
    """The default dataset as `jaxnets models` lists it (siamese models train on its pairs)."""
    name = default_dataset(model)
    return f"{name} pairs" if is_siamese(model) else name


def _example_shape(model: str) -> tuple[int, ...]:
    """Shape of one example of the model's data: a pair member, a discriminator's input."""
    pair = gan_pair(model)
    # Only the shape is needed: eval_shape runs no array op (each would compile).
    name = pair[1] if pair else model
    shape = tuple(jax.eval_shape(lambda: models_lib.example_input(name, batch_size=1)).shape)
    return shape[2:] if is_siamese(model) else shape[1:]


def dataset_options(model: str, dataset: str) -> dict:
    """Loader options that give ``dataset`` the layout ``model`` expects.

    ``dataset`` may be any registered name of the data, in any case.
    """
    dataset = datasets_lib.canonical_name(dataset)  # "Digits", "jane_austen" get options too
    shape = _example_shape(model)
    if dataset == "digits" and (len(shape) == 3 or gan_pair(model)):
        # GAN samples are drawn as an image grid, so even the MLP pair gets images.
        return {"image": True}  # (8, 8, 1) for convolutional models
    if dataset == "mnist1d" and len(shape) == 2:
        return {"as_sequence": True}  # (40, 1) for recurrent models and transformers
    if dataset == "austen":
        module = models_lib.get(model)
        length = getattr(module, "block_size", None) or getattr(module, "max_len", None) or 64
        return {"seq_len": min(int(length), 64)}
    return {}


def task_of(model: str) -> str:
    """The model's task (``classify``, ``tag``, ``generate``...), refusing unknown ones."""
    task = models_lib.get(model).task
    if task not in TASKS:
        raise ConfigError(
            f"model {model!r} has task {task!r}, which `jaxnets train` does not know "
            f"({', '.join(TASKS)})."
        )
    return task


def _check_fits(model: str, task: str, dataset):
    """Refuses model/dataset combinations whose targets cannot match the model's outputs."""
    per_step = dataset.task in ("tagging", "language_modeling")
    if task == "tag" and not per_step:
        raise ConfigError(
            f"{model} tags every step of a sequence, so it needs a label per step; "
            f"{dataset.name} has one label per example ({dataset.task}). "
            "Use --dataset austen_segmentation (or austen)."
        )
    if dataset.task == "tagging" and task != "tag":
        raise ConfigError(
            f"{dataset.name} has a label per step of each sequence; {model} ({task}) predicts "
            "one per example. Use a tagger such as --model gru_tagger."
        )


def adapt(model: str, dataset):
    """Targets for the model's task: the inputs themselves to reconstruct, the next
    character for text classifiers on a language-modelling corpus, same/different
    pairs for siamese models (drawn with seed 0 within each split, so every run of
    a dataset is tested on the same pairs)."""
    task = task_of(model)
    _check_fits(model, task, dataset)
    if is_siamese(model):
        return pairs_lib.pair_dataset(dataset, seed=0)
    # Each split's targets change the same way; a validation split is kept (its
    # rows already left the training split: dropping it would lose them twice).
    has_val = dataset.x_val is not None
    if task == "reconstruct":
        return dataclasses.replace(
            dataset,
            y_train=dataset.x_train,
            y_test=dataset.x_test,
            y_val=dataset.x_val if has_val else None,
        )
    if task == "classify" and dataset.task == "language_modeling":
        # Classify the character that follows each window.
        return dataclasses.replace(
            dataset,
            y_train=dataset.y_train[:, -1],
            y_test=dataset.y_test[:, -1],
            y_val=dataset.y_val[:, -1] if has_val else None,
        )
    return dataset


def build(model: str, dataset):
    """The model sized for ``dataset``: classes (or outputs) and vocabulary."""
    module = models_lib.get(model)
    fields = {f.name for f in dataclasses.fields(module)}
    overrides = {}
    outputs = dataset.num_classes if dataset.task != "regression" else 1
    if "num_classes" in fields and outputs is not None:
        overrides["num_classes"] = outputs
    if "vocab_size" in fields and dataset.vocab_size is not None:
        overrides["vocab_size"] = dataset.vocab_size
    elif "vocab_size" in fields and dataset.task == "language_modeling":
        overrides["vocab_size"] = dataset.num_classes
    if "input_shape" in fields:
        shape = tuple(dataset.input_shape)
        overrides["input_shape"] = shape[1:] if is_siamese(model) else shape  # one pair member
    return models_lib.get(model, **overrides)


def loss_and_metrics(model: str, dataset) -> tuple[str, tuple[str, ...]]:
    """The loss and the metrics reported for the model's task on this dataset."""
    task = task_of(model)
    if task == "reconstruct" or dataset.task == "regression":
        return "mse", ("mae",)
    if task == "lm":
        return "sparse_categorical_crossentropy", ("accuracy",)
    if dataset.task == "tagging" or is_siamese(model):
        # Word starts, same/different pairs: the F1 of class 1, the rarer class or the
        # one asked about, says more than the macro average.
        return "sparse_categorical_crossentropy", ("accuracy", "f1_binary")
    return "sparse_categorical_crossentropy", ("accuracy", "f1")
