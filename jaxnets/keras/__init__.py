"""The Keras-style facade: `Sequential`, `Model`, `load_model`.

A Keras script ports by changing its imports: ``Sequential([...])``,
``compile``, ``fit``, ``evaluate``, ``predict``, ``summary``, ``save`` and
the callbacks in `jaxnets.callbacks` keep their Keras names and arguments.
Underneath, ``model.state`` is the functional `jaxnets.training.TrainState`
and ``fit`` is `jaxnets.training.fit`.

Example:
  >>> import numpy as np
  >>> from jaxnets import layers
  >>> from jaxnets.keras import Sequential
  >>> model = Sequential([layers.Dense(8, activation="relu", input_shape=(4,)),
  ...                     layers.Dense(3, activation="softmax")])
  >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
  >>> x, y = np.ones((10, 4), np.float32), np.zeros(10, np.int32)
  >>> _ = model.fit(x, y, epochs=1, verbose=0)
  >>> model.predict(x[:1]).sum().round(4)  # probabilities, as in Keras
  np.float32(1.0)
"""

from jaxnets.callbacks.misc import History
from jaxnets.keras.model import Model
from jaxnets.keras.saving import load_model
from jaxnets.keras.sequential import Sequential
from jaxnets.keras.serialization import register_serializable

__all__ = ["History", "Model", "Sequential", "load_model", "register_serializable"]
