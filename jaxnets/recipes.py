"""How a zoo model meets a dataset: default data, input layout, loss and metrics.

``jaxnets train --model NAME`` needs no other flag: each model's ``task``
(``classify``, ``lm``, ``reconstruct``...) picks the loss and metrics, and the
model name picks a dataset that fits it (images for the CNNs, sequences for
the recurrent models, the Austen corpus for language models).

Example:
  >>> default_dataset("cnn1d"), dataset_options("lstm", "mnist1d")
  ('mnist1d', {'as_sequence': True})
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxnets import models as models_lib
from jaxnets.errors import ConfigError

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
}

# Tasks a model can be trained on with `jaxnets train`; the rest have their own loops.
_ELSEWHERE = {
    "generate": "GAN parts train in pairs: see jaxnets.models.gan.gan_train_step and experiments/gan",
    "binary": "GAN parts train in pairs: see jaxnets.models.gan.gan_train_step and experiments/gan",
    "tag": "sequence tagging needs per-step labels: use jaxnets.training.fit with (B, T) targets",
}


def default_dataset(model: str) -> str:
    """The dataset ``jaxnets train --model MODEL`` uses when ``--dataset`` is not given."""
    return _DEFAULT_DATASET.get(model.lower(), "digits")


def _example_shape(model: str) -> tuple[int, ...]:
    return tuple(np.shape(models_lib.example_input(model, batch_size=1))[1:])


def dataset_options(model: str, dataset: str) -> dict:
    """Loader options that give ``dataset`` the layout ``model`` expects."""
    shape = _example_shape(model)
    if dataset == "digits" and len(shape) == 3:
        return {"image": True}  # (8, 8, 1) for convolutional models
    if dataset == "mnist1d" and len(shape) == 2:
        return {"as_sequence": True}  # (40, 1) for recurrent models and transformers
    if dataset == "austen":
        module = models_lib.get(model)
        length = getattr(module, "block_size", None) or getattr(module, "max_len", None) or 64
        return {"seq_len": min(int(length), 64)}
    return {}


def task_of(model: str) -> str:
    """The model's task, refusing those that `jaxnets train` cannot train."""
    task = models_lib.get(model).task
    if task in _ELSEWHERE:
        raise ConfigError(
            f"model {model!r} (task {task!r}) is not trained by `jaxnets train`: {_ELSEWHERE[task]}."
        )
    if "siamese" in model.lower():
        raise ConfigError(
            f"model {model!r} takes pairs of inputs: build pairs and train it with jaxnets.training.fit."
        )
    return task


def adapt(model: str, dataset):
    """Targets for the model's task: the inputs themselves to reconstruct, the next
    character for text classifiers on a language-modelling corpus."""
    task = task_of(model)
    if task == "reconstruct":
        return dataclasses.replace(
            dataset, y_train=dataset.x_train, y_test=dataset.x_test, x_val=None, y_val=None
        )
    if task == "classify" and dataset.task == "language_modeling":
        # Classify the character that follows each window.
        return dataclasses.replace(
            dataset,
            y_train=dataset.y_train[:, -1],
            y_test=dataset.y_test[:, -1],
            x_val=None,
            y_val=None,
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
    if "vocab_size" in fields and dataset.task == "language_modeling":
        overrides["vocab_size"] = dataset.num_classes
    if "input_shape" in fields:
        overrides["input_shape"] = tuple(dataset.input_shape)
    return models_lib.get(model, **overrides)


def loss_and_metrics(model: str, dataset) -> tuple[str, tuple[str, ...]]:
    """The loss and the metrics reported for the model's task on this dataset."""
    task = task_of(model)
    if task == "reconstruct" or dataset.task == "regression":
        return "mse", ("mae",)
    if task == "lm":
        return "sparse_categorical_crossentropy", ("accuracy",)
    return "sparse_categorical_crossentropy", ("accuracy", "f1")
