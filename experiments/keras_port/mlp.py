"""Keras's ``mnist_mlp`` example on Fashion-MNIST, ported to jaxnets by changing imports.

Keras original (keras-team/keras ``examples/mnist_mlp.py``): two Dense(512)
layers with dropout, RMSprop, categorical cross-entropy on one-hot labels.

Run: ``python experiments/keras_port/mlp.py [--quick]``.
"""

import argparse
import time

import port_data  # keras.datasets.fashion_mnist, from jaxnets' offline copy

# Keras: from keras.models import Sequential
#        from keras.layers import Dense, Dropout
#        from keras.utils import to_categorical
from jaxnets import Sequential
from jaxnets.data import one_hot as to_categorical
from jaxnets.layers import Dense, Dropout

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="2000 images, 1 epoch")
args = parser.parse_args()
(x_train, y_train), (x_test, y_test), note = port_data.fashion_mnist(args.quick)
print("data:", note)
start = time.perf_counter()

# ---- the Keras code, unchanged ----
batch_size = 128
num_classes = 10
epochs = 1 if args.quick else 20

x_train = x_train.reshape(len(x_train), 784)
x_test = x_test.reshape(len(x_test), 784)
x_train = x_train.astype("float32")
x_test = x_test.astype("float32")
x_train /= 255
x_test /= 255
print(x_train.shape[0], "train samples")
print(x_test.shape[0], "test samples")

# convert class vectors to binary class matrices
y_train = to_categorical(y_train, num_classes)
y_test = to_categorical(y_test, num_classes)

model = Sequential()
model.add(Dense(512, activation="relu", input_shape=(784,)))
model.add(Dropout(0.2))
model.add(Dense(512, activation="relu"))
model.add(Dropout(0.2))
model.add(Dense(num_classes, activation="softmax"))

model.summary()

model.compile(loss="categorical_crossentropy", optimizer="rmsprop", metrics=["accuracy"])

history = model.fit(
    x_train,
    y_train,
    batch_size=batch_size,
    epochs=epochs,
    verbose=2,
    validation_data=(x_test, y_test),
)
score = model.evaluate(x_test, y_test, verbose=0)
print("Test loss:", score[0])
print("Test accuracy:", score[1])
# ---- end of the Keras code ----

print(f"RESULT mlp: test_loss={score[0]:.4f} test_accuracy={score[1]:.4f} "
      f"seconds={time.perf_counter() - start:.1f}")  # fmt: skip
