"""The jaxnets model zoo: one family per module, looked up by name.

Example:
  >>> from jaxnets import models
  >>> model = models.get("cnn")
  >>> type(model).__name__
  'CNN'
"""

from jaxnets.models.autoencoder import ConvAutoencoder, DenseAutoencoder
from jaxnets.models.cnn import CNN, ConvNetBN
from jaxnets.models.cnn1d import CNN1D
from jaxnets.models.gan import (
    DCGANDiscriminator,
    DCGANGenerator,
    GANState,
    MLPDiscriminator,
    MLPGenerator,
    gan_train_step,
    save_sample_grid,
)
from jaxnets.models.gpt import GPT, generate
from jaxnets.models.mlp import MLP
from jaxnets.models.recurrent import RecurrentClassifier
from jaxnets.models.registry import MODELS, example_input, get, names
from jaxnets.models.resnet import ResNet
from jaxnets.models.siamese import Siamese
from jaxnets.models.transformer import TransformerBlock, TransformerClassifier

__all__ = [
    "CNN",
    "CNN1D",
    "GPT",
    "MLP",
    "MODELS",
    "ConvAutoencoder",
    "ConvNetBN",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "DenseAutoencoder",
    "GANState",
    "MLPDiscriminator",
    "MLPGenerator",
    "RecurrentClassifier",
    "ResNet",
    "Siamese",
    "TransformerBlock",
    "TransformerClassifier",
    "example_input",
    "gan_train_step",
    "generate",
    "get",
    "names",
    "save_sample_grid",
]
