"""A Keras LSTM sequence classifier on MNIST-1D, ported to jaxnets by changing imports.

Keras original: the Sequential-API recurrent classifier of the Keras guide
"Working with RNNs" (``layers.LSTM(64, input_shape=(None, 28))`` then a
softmax ``Dense``), here reading MNIST-1D's 40-step, 1-feature sequences.

Run: ``python experiments/keras_port/lstm.py [--quick]``.
"""

import argparse
import time

import port_data

# Keras: import keras; from keras import layers
import jaxnets as keras
from jaxnets import layers

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="800 sequences, 1 epoch")
args = parser.parse_args()
EPOCHS = 1 if args.quick else 20
(x_train, y_train), (x_test, y_test), note = port_data.mnist1d(args.quick)
print("data:", note)
start = time.perf_counter()

# ---- the Keras code, unchanged ----
model = keras.Sequential()
model.add(layers.LSTM(64, input_shape=(40, 1)))
model.add(layers.BatchNormalization())
model.add(layers.Dense(10, activation="softmax"))
model.summary()

model.compile(
    loss="sparse_categorical_crossentropy",
    optimizer="adam",
    metrics=["accuracy"],
)
model.fit(
    x_train, y_train, validation_data=(x_test, y_test), batch_size=64, epochs=EPOCHS, verbose=2
)
test_loss, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
# ---- end of the Keras code ----

print(f"RESULT lstm: test_loss={test_loss:.4f} test_accuracy={test_accuracy:.4f} "
      f"seconds={time.perf_counter() - start:.1f}")  # fmt: skip
