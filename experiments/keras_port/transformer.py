"""A KerasNLP Transformer text classifier, ported to jaxnets by changing imports.

Keras original: a ``keras.Sequential`` of KerasNLP's
``TokenAndPositionEmbedding`` and ``TransformerEncoder``, global average
pooling and a softmax ``Dense`` (the shape of keras.io's "Text classification
with Transformer"), on a synthetic stand-in for IMDB (see ``port_data.reviews``).

Run: ``python experiments/keras_port/transformer.py [--quick]``.
"""

import argparse
import time

import port_data

# Keras: import keras; from keras import layers
#        from keras_nlp.layers import TokenAndPositionEmbedding, TransformerEncoder
import jaxnets as keras
from jaxnets import layers
from jaxnets.keras.nlp import TokenAndPositionEmbedding, TransformerEncoder

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="960 reviews, 1 epoch")
args = parser.parse_args()
EPOCHS = 1 if args.quick else 4
vocab_size, maxlen = 1000, 64
(x_train, y_train), (x_val, y_val), note = port_data.reviews(args.quick, vocab_size, maxlen)
print("data:", note)
start = time.perf_counter()

# ---- the Keras code, unchanged ----
embed_dim = 32  # Embedding size for each token
num_heads = 2  # Number of attention heads
ff_dim = 32  # Hidden layer size in feed forward network inside transformer

model = keras.Sequential([
    TokenAndPositionEmbedding(vocab_size, maxlen, embed_dim, mask_zero=True),
    TransformerEncoder(intermediate_dim=ff_dim, num_heads=num_heads, dropout=0.1),
    layers.GlobalAveragePooling1D(),
    layers.Dropout(0.1),
    layers.Dense(20, activation="relu"),
    layers.Dropout(0.1),
    layers.Dense(2, activation="softmax"),
])  # fmt: skip
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
history = model.fit(
    x_train, y_train, batch_size=32, epochs=EPOCHS, validation_data=(x_val, y_val), verbose=2
)
val_loss, val_accuracy = model.evaluate(x_val, y_val, verbose=0)
# ---- end of the Keras code ----

print(f"RESULT transformer: test_loss={val_loss:.4f} test_accuracy={val_accuracy:.4f} "
      f"seconds={time.perf_counter() - start:.1f}")  # fmt: skip
