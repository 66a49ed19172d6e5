"""`Sequential`: a Linen module that is also a Keras-style model.

``Sequential([...layers])`` is an ordinary Flax Linen module: it calls its
layers in order, passing ``train`` to each layer that takes it, so it can be
initialised, applied, nested inside other modules or handed to
`jaxnets.training.create_train_state`. It also carries the `jaxnets.keras.Model`
methods (``compile``, ``fit``, ``evaluate``, ``predict``, ``summary``,
``save``...), so a Keras ``Sequential`` model ports line for line.

Masks follow Keras's propagation: an ``Embedding(mask_zero=True)`` (any layer
with ``mask_zero`` and ``compute_mask``), or a
``mask=`` argument) yields a ``(B, T)`` mask that is passed to each layer
accepting ``mask=`` until a layer's output has no time axis left.

Parameters are named after each layer's position: ``layers_0``, ``layers_1``...

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxnets import layers
  >>> model = Sequential([layers.Dense(4, activation="relu", input_shape=(3,)), layers.Dense(2)])
  >>> variables = model.init(jax.random.key(0), jnp.ones((1, 3)))
  >>> sorted(variables["params"])
  ['layers_0', 'layers_1']
  >>> model.count_params()  # built from the first layer's input_shape
  26
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxnets.errors import ConfigError
from jaxnets.keras.model import FacadeState, Model
from jaxnets.layers import (
    Activation,
    BatchNormalization,
    Dense,
    Dropout,
    Embedding,
    GaussianNoise,
    LayerNormalization,
    LeakyReLU,
    ReLU,
    UnitNormalization,
)
from jaxnets.layers.base import float_inputs
from jaxnets.training.state import accepted_call_kwargs, mode_kwargs

# Attributes that live on the Keras side of the object (not Linen fields):
# assignments to them bypass Flax's frozen-module check.
_KERAS_ATTRS = frozenset(
    {"_keras"} | {n for n, v in vars(Model).items() if isinstance(v, property) and v.fset}
)


# Layers that pass a mask through unchanged, as Keras's with supports_masking=True
# that do not consume it: they act on each time step alone.
# (Dropout covers SpatialDropout1D, whose mask per channel is shared by every step.)
_KEEP_MASK = (
    Activation,
    BatchNormalization,
    Dense,
    Dropout,
    GaussianNoise,
    LayerNormalization,
    LeakyReLU,
    ReLU,
    UnitNormalization,
)


def frozen_patterns(module, prefix: str = "") -> list[str]:
    """Path patterns (``/``-joined, inside ``params``) of the frozen parameters of ``module``.

    Example:
      >>> from jaxnets import layers
      >>> base = Sequential([layers.Dense(4), layers.Dense(4, trainable=False)])
      >>> frozen_patterns(Sequential([base, layers.Dense(2)]))
      ['layers_0/layers_1/.*']
      >>> frozen_patterns(Sequential([base.clone(trainable=False), layers.Dense(2)]))
      ['layers_0/.*']
    """
    if not getattr(module, "trainable", True):
        return [f"{prefix}.*"]
    found = []
    for i, layer in enumerate(
        getattr(module, "layers", ()) if isinstance(module, Sequential) else ()
    ):
        if isinstance(layer, nn.Module):
            found += frozen_patterns(layer, f"{prefix}layers_{i}/")
    return found


def _surviving_mask(mask, x):
    """``mask`` if ``x`` still has the ``(batch, time)`` axes it describes, else None."""
    if mask is None or not hasattr(x, "ndim") or x.ndim < 3 or x.shape[:2] != mask.shape:
        return None  # the time axis is gone (e.g. an LSTM without return_sequences)
    return mask


class Sequential(nn.Module, Model):
    """A linear stack of layers (Keras ``Sequential``), usable as a Linen module.

    Attributes:
      layers: the layers (Linen modules or plain functions), called in order.
      trainable: keyword-only (Keras): False freezes every parameter of this
        model when the model it is part of is compiled (``base.trainable = False``
        for transfer learning), and runs its ``BatchNormalization`` layers in
        inference mode, as Keras does. Each layer has its own ``trainable`` too.

    Example:
      >>> import numpy as np
      >>> import jaxnets
      >>> from jaxnets import layers
      >>> model = jaxnets.Sequential()
      >>> model.add(layers.Dense(4, activation="relu", input_shape=(3,)))
      >>> model.add(layers.Dense(1))
      >>> model.compile(optimizer="adam", loss="mse")
      >>> model.count_params()  # (3 * 4 + 4) + (4 * 1 + 1)
      21
      >>> x, y = np.ones((16, 3), np.float32), np.ones((16, 1), np.float32)
      >>> history = model.fit(x, y, epochs=2, verbose=0)
      >>> len(history.history["loss"]), model.predict(x[:5]).shape
      (2, (5, 1))
    """

    layers: Sequence[Callable] = ()
    trainable: bool = dataclasses.field(default=True, kw_only=True)

    def __post_init__(self):
        # Flax freezes lists to tuples only on assignment; hashing needs a tuple.
        self.layers = tuple(self.layers)
        object.__setattr__(self, "_keras", FacadeState())
        super().__post_init__()

    @nn.nowrap
    def __setattr__(self, name, value):
        if name in _KERAS_ATTRS:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def __call__(self, x, train: bool = False, mask=None, *, training: bool | None = None):
        # ``training=`` is Keras's spelling (``model(x, training=False)``); ``train`` is jaxnets'.
        train = train if training is None else training
        if self.scope is None:  # Keras-style ``model(x)`` on the facade, not inside a Flax apply
            return Model.__call__(self, x, training=train)
        if not self.takes_tokens():
            x = float_inputs(x)  # Keras casts a model's inputs to float32 (uint8 images too)
        for layer in self.layers:
            if not isinstance(layer, nn.Module):
                x = layer(x)  # a plain function (e.g. jax.nn.relu): elementwise, keeps a mask
                mask = _surviving_mask(mask, x)
                continue
            accepts = accepted_call_kwargs(layer)
            frozen = not self.trainable or not getattr(layer, "trainable", True)
            # Keras runs a frozen BatchNormalization in inference mode (moving statistics).
            kwargs = mode_kwargs(
                accepts, train and not (frozen and isinstance(layer, BatchNormalization))
            )
            if mask is not None and "mask" in accepts:
                kwargs["mask"] = mask
            inputs = x
            x = layer(x, **kwargs)
            if getattr(layer, "mask_zero", False):
                mask = layer.compute_mask(inputs)  # Embedding(mask_zero=True) and the like
            elif mask is not None and "mask" not in accepts and not isinstance(layer, _KEEP_MASK):
                # Keras drops the mask at a layer that does not support masking
                # (a convolution or pooling over time, Flatten, Reshape) and says so.
                warnings.warn(
                    f"{type(layer).__name__} does not support masking: the mask from the "
                    "layers before it is dropped, so the layers after it see every step "
                    "(as in Keras).",
                    stacklevel=2,
                )
                mask = None
            mask = _surviving_mask(mask, x)
        if mask is not None:
            # Recorded only when "intermediates" is mutable: the facade asks whether the
            # outputs still carry a step mask (then the loss and metrics skip those steps).
            self.sow("intermediates", "output_mask", mask)
        return x

    @nn.nowrap
    def add(self, layer):
        """Appends a layer (Keras ``model.add``); only before the model is built."""
        if self.built:
            raise ConfigError(
                "add() changes the architecture, so it must come before the model is built "
                "(before build/compile-with-input_shape/fit/summary); start a new Sequential."
            )
        object.__setattr__(self, "layers", (*self.layers, layer))

    @nn.nowrap
    def pop(self):
        """Removes the last layer (Keras ``model.pop``); only before the model is built."""
        if self.built or not self.layers:
            raise ConfigError("pop() needs an unbuilt Sequential with at least one layer.")
        object.__setattr__(self, "layers", self.layers[:-1])

    @nn.nowrap
    def frozen_patterns(self) -> list[str]:
        """Patterns of the parameters that ``trainable=False`` freezes (see `frozen_patterns`)."""
        return frozen_patterns(self)

    @nn.nowrap
    def takes_tokens(self) -> bool:
        """Whether the first layer embeds integer ids (it can compute a padding mask)."""
        first = self.layers[0] if self.layers else None
        return isinstance(first, Embedding) or hasattr(first, "compute_mask")

    @nn.nowrap
    def default_input(self):
        """A one-row zero input from the first layer's ``input_shape``, or None."""
        first = self.layers[0] if self.layers else None
        if isinstance(first, Sequential):  # a nested model: its own first layer's input_shape
            return first.default_input()
        shape = getattr(first, "input_shape", None)
        if shape is None:
            return None
        dtype = jnp.int32 if self.takes_tokens() else jnp.float32
        return jnp.zeros((1, *shape), dtype)
