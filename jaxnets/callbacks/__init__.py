"""Host-side callbacks with Keras's names and hooks."""

from jaxnets.callbacks.base import Callback, CallbackList
from jaxnets.callbacks.early_stopping import EarlyStopping
from jaxnets.callbacks.logging import CSVLogger, ProgBar
from jaxnets.callbacks.lr import LearningRateScheduler, ReduceLROnPlateau
from jaxnets.callbacks.misc import History, LambdaCallback, TerminateOnNaN
from jaxnets.callbacks.model_checkpoint import ModelCheckpoint
from jaxnets.callbacks.tensorboard import TensorBoard

__all__ = [
    "CSVLogger",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "History",
    "LambdaCallback",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "ProgBar",
    "ReduceLROnPlateau",
    "TensorBoard",
    "TerminateOnNaN",
]
