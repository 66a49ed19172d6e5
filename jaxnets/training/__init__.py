"""The functional core: `TrainState`, pure steps, and the loops built on them."""

from jaxnets.training.engine import LocalEngine, default_engine
from jaxnets.training.inference import evaluate, predict
from jaxnets.training.loop import fit
from jaxnets.training.state import TrainState, create_train_state
from jaxnets.training.step import eval_step, predict_step, train_step

__all__ = [
    "LocalEngine",
    "TrainState",
    "create_train_state",
    "default_engine",
    "eval_step",
    "evaluate",
    "fit",
    "predict",
    "predict_step",
    "train_step",
]
