"""Keras 3 on its JAX backend, ``steps_per_execution`` 1 and 32.

The models are the Keras spellings of the reference models; each timed run is
the second epoch of a two-epoch ``Model.fit``, timed between epoch ends like
the jaxnets contenders. Skipped (an error in the table) when keras is not
installed or another backend was imported first.
"""

from __future__ import annotations

import os
import time

import numpy as np

from benchmarks.common import LEARNING_RATE, Contender, Spec

os.environ.setdefault("KERAS_BACKEND", "jax")


def build(name: str):
    import keras
    from keras import layers

    if name == "mlp":
        return keras.Sequential([keras.Input((784,)), layers.Dense(128, "relu"), layers.Dense(10)])
    if name == "cnn":
        return keras.Sequential([
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2),
            layers.Flatten(), layers.Dense(10),
        ])  # fmt: skip
    if name == "lstm":
        return keras.Sequential([keras.Input((64, 32)), layers.LSTM(128), layers.Dense(10)])
    tokens = keras.Input((64,), dtype="int32")
    h = layers.Embedding(256, 128)(tokens)
    h = h + keras.ops.expand_dims(layers.Embedding(64, 128)(keras.ops.arange(64)), 0)
    for _ in range(2):
        a = layers.LayerNormalization()(h)
        h = h + layers.MultiHeadAttention(4, 32)(a, a)
        m = layers.LayerNormalization()(h)
        h = h + layers.Dense(128)(layers.Dense(512, activation="gelu")(m))
    h = layers.GlobalAveragePooling1D()(layers.LayerNormalization()(h))
    return keras.Model(tokens, layers.Dense(10)(h))


def contenders(spec: Spec, x: np.ndarray, y: np.ndarray) -> list[Contender]:
    out = []
    steps = len(x) // spec.batch
    for spe in (1, 32):
        box = {}

        def run(box=box):
            import keras

            ends = []
            timer = keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: ends.append(time.perf_counter())
            )
            box["model"].fit(x, y, batch_size=spec.batch, epochs=2, verbose=0, callbacks=[timer])
            return steps, ends[1] - ends[0]

        def setup(spe=spe, box=box, run=run):
            import keras

            if keras.backend.backend() != "jax":
                raise RuntimeError(f"keras uses the {keras.backend.backend()} backend, not jax")
            keras.utils.set_random_seed(0)
            model = build(spec.name)
            model.compile(
                optimizer=keras.optimizers.Adam(LEARNING_RATE),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
                steps_per_execution=spe,
                jit_compile=True,
            )
            box["model"] = model
            run()

        out.append(Contender(f"keras-spe{spe}", setup, run))
    return out
