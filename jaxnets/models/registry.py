"""The model zoo: an explicit table from name to constructor.

Every constructor is a class or a ``functools.partial`` preset of one, so
``get(name, **overrides)`` builds a fresh module with any field changed.
Every model has ``example_input(batch_size)`` (a sample batch for init and
smoke tests) and a ``task`` ('classify', 'tag', 'lm', 'reconstruct',
'generate' or 'binary') naming the loss it is trained with.

Example:
  >>> import jax
  >>> from jaxnets import models
  >>> model = models.get("mlp_784_64_64_10", dropout_rate=0.1)
  >>> x = models.example_input("mlp_784_64_64_10")
  >>> x.shape
  (2, 28, 28, 1)
  >>> models.get("resnet19")
  Traceback (most recent call last):
  ...
  jaxnets.errors.UnknownNameError: unknown model 'resnet19'; did you mean 'resnet18'? ...
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import flax.linen as nn
import jax

from jaxnets.errors import ConfigError, lookup
from jaxnets.models import (
    autoencoder,
    cnn,
    cnn1d,
    gan,
    gpt,
    mlp,
    recurrent,
    resnet,
    siamese,
    transformer,
)

MODELS: dict[str, Callable[..., nn.Module]] = {
    # mlp.py
    "mlp": mlp.MLP,
    "mlp_784_128_10": mlp.mlp_784_128_10,
    "mlp_784_64_64_10": mlp.mlp_784_64_64_10,
    # cnn.py
    "cnn": cnn.cnn,
    "convnet_bn": cnn.convnet_bn,
    # resnet.py
    "resnet18": resnet.resnet18,
    "resnet20": resnet.resnet20,
    "resnet_tiny": resnet.resnet_tiny,
    # cnn1d.py
    "cnn1d": cnn1d.cnn1d,
    # recurrent.py
    "rnn": recurrent.rnn,
    "lstm": recurrent.lstm,
    "gru": recurrent.gru,
    "bilstm": recurrent.bilstm,
    "gru_tagger": recurrent.gru_tagger,
    "lstm_text": recurrent.lstm_text,
    # transformer.py
    "transformer": transformer.transformer,
    "transformer_text": transformer.transformer_text,
    # gpt.py
    "gpt_char": gpt.gpt_char,
    "gpt_tiny": gpt.gpt_tiny,
    # gan.py
    "gan_mlp_generator": gan.gan_mlp_generator,
    "gan_mlp_discriminator": gan.gan_mlp_discriminator,
    "dcgan_generator": gan.dcgan_generator,
    "dcgan_discriminator": gan.dcgan_discriminator,
    # autoencoder.py
    "autoencoder_dense": autoencoder.autoencoder_dense,
    "autoencoder_conv": autoencoder.autoencoder_conv,
    # siamese.py
    "siamese_mlp": siamese.siamese_mlp,
    "siamese_cnn": siamese.siamese_cnn,
}


def names() -> list[str]:
    """The registered model names, sorted.

    Returns:
      A sorted list of the names `get` accepts.

    Example:
      >>> "cnn" in names()
      True
    """
    return sorted(MODELS)


def _module_class(constructor: Callable[..., nn.Module]) -> type:
    while isinstance(constructor, functools.partial):
        constructor = constructor.func
    return constructor


def get(name: str, **overrides) -> nn.Module:
    """Builds the model registered as ``name``, with any field overridden.

    Args:
      name: a registered name (case-insensitive); see `names`.
      **overrides: dataclass fields of the model (``num_classes=3``, ``dropout_rate=0.1``...).

    Returns:
      An unbound Flax Linen module.

    Raises:
      UnknownNameError: ``name`` is not registered (the message lists the valid names).
      ConfigError: an override is not a field of the model.

    Example:
      >>> from jaxnets import models
      >>> model = models.get("resnet_tiny", num_classes=3)
      >>> type(model).__name__, model.stage_sizes, model.num_classes
      ('ResNet', (1, 1), 3)
      >>> models.get("mlp", width=8)
      Traceback (most recent call last):
      ...
      jaxnets.errors.ConfigError: model 'mlp' (MLP) has no field(s) width; valid fields: ...
    """
    constructor = lookup(name, MODELS, kind="model")
    cls = _module_class(constructor)
    valid = [f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name")]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ConfigError(
            f"model {name!r} ({cls.__name__}) has no field(s) {', '.join(unknown)}; "
            f"valid fields: {', '.join(valid)}."
        )
    return constructor(**overrides)


def example_input(name_or_model: str | nn.Module, batch_size: int = 2, seed: int = 0) -> jax.Array:
    """A sample input batch for a registered name or a model instance.

    Args:
      name_or_model: a registered name (built with its defaults by `get`) or a
        zoo module instance (anything with an ``example_input`` method).
      batch_size: the number of examples (the leading axis).
      seed: the NumPy seed of the sample; the same seed gives the same batch.

    Returns:
      The model's ``example_input(batch_size=batch_size, seed=seed)``: e.g.
      standard-normal float32 features or images, or int32 tokens for text models.

    Example:
      >>> example_input("gpt_tiny", batch_size=3).shape
      (3, 8)
    """
    model = get(name_or_model) if isinstance(name_or_model, str) else name_or_model
    return model.example_input(batch_size=batch_size, seed=seed)
