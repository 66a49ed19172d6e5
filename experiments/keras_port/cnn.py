"""The Keras CNN quick-start on Fashion-MNIST, ported to jaxnets by changing imports.

Keras original (TensorFlow's "Convolutional Neural Network" tutorial, on MNIST
-style 28x28 images)::

    from tensorflow.keras import datasets, layers, models
    (x_train, y_train), (x_test, y_test) = datasets.fashion_mnist.load_data()

Run: ``python experiments/keras_port/cnn.py [--quick]``.
"""

import argparse
import time

import port_data  # keras.datasets.fashion_mnist, from jaxnets' offline copy

# Keras: import tensorflow as tf; from tensorflow.keras import layers
import jaxnets
from jaxnets import layers

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="2000 images, 1 epoch")
args = parser.parse_args()
EPOCHS = 1 if args.quick else 5
(x_train, y_train), (x_test, y_test), note = port_data.fashion_mnist(args.quick)
print("data:", note)
start = time.perf_counter()

# ---- the Keras code, unchanged ----
x_train = x_train.reshape((-1, 28, 28, 1)) / 255.0
x_test = x_test.reshape((-1, 28, 28, 1)) / 255.0

model = jaxnets.Sequential([
    layers.Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1)),
    layers.MaxPooling2D((2, 2)),
    layers.Conv2D(64, (3, 3), activation='relu'),
    layers.MaxPooling2D((2, 2)),
    layers.Flatten(),
    layers.Dense(10, activation='softmax')])  # fmt: skip
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x_train, y_train, epochs=EPOCHS)
loss, accuracy = model.evaluate(x_test, y_test, verbose=2)
# ---- end of the Keras code ----

print(f"RESULT cnn: test_loss={loss:.4f} test_accuracy={accuracy:.4f} "
      f"seconds={time.perf_counter() - start:.1f}")  # fmt: skip
