"""Data for the Keras ports, in the formats ``keras.datasets`` returns.

The Keras originals call ``keras.datasets.<name>.load_data()``; these helpers
return the same layout from jaxnets' offline datasets, so the model code after
the loading line is the Keras code unchanged. ``quick`` keeps a small slice.
"""

from __future__ import annotations

import numpy as np

from jaxnets import data


def fashion_mnist(quick: bool = False):
    """``((x_train, y_train), (x_test, y_test))`` as uint8 ``(n, 28, 28)`` and labels, plus a note.

    Falls back to scikit-learn's 8x8 digits, upsampled to 28x28, when
    Fashion-MNIST is not installed (the Keras code expects 28x28 inputs).
    """
    try:
        ds = data.load("fashion_mnist")
        note = "Fashion-MNIST"
        to_uint8 = lambda x: np.rint(x[..., 0] * 255).astype(np.uint8)  # noqa: E731
    except FileNotFoundError:
        ds = data.load("digits")
        note = "digits (Fashion-MNIST not installed): 8x8 upsampled 3x and padded to 28x28"

        def to_uint8(x):
            img = np.kron(x.reshape(-1, 8, 8), np.ones((3, 3))) * (255 / 16)
            return np.pad(img, ((0, 0), (2, 2), (2, 2))).astype(np.uint8)

    x_train, y_train, x_test, y_test = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    if quick:
        x_train, y_train, x_test, y_test = (
            x_train[:2000],
            y_train[:2000],
            x_test[:500],
            y_test[:500],
        )
    return (to_uint8(x_train), y_train), (to_uint8(x_test), y_test), note


def mnist1d(quick: bool = False):
    """MNIST-1D: ``(n, 40, 1)`` float sequences and 10 classes."""
    ds = data.load("mnist1d")
    x_train, x_test = ds.x_train[..., None], ds.x_test[..., None]
    y_train, y_test = ds.y_train, ds.y_test
    if quick:
        x_train, y_train, x_test, y_test = x_train[:800], y_train[:800], x_test[:200], y_test[:200]
    return (x_train, y_train), (x_test, y_test), "MNIST-1D (40 steps, 10 classes)"


def reviews(quick: bool = False, vocab_size: int = 1000, maxlen: int = 64, seed: int = 0):
    """A synthetic stand-in for IMDB: token-id reviews, 0-padded, label 1 if positive.

    Tokens 1-20 are "positive words", 21-40 "negative words", the rest neutral;
    a review is positive when it holds more positive than negative words.
    Lengths vary from 16 to ``maxlen``, so the padding mask matters.
    """
    rng = np.random.default_rng(seed)
    n = 1200 if quick else 12000
    x = np.zeros((n, maxlen), np.int32)
    y = np.zeros(n, np.int32)
    for i in range(n):
        length = rng.integers(16, maxlen + 1)
        pos, neg = rng.integers(0, 6, size=2)
        while pos == neg:
            pos, neg = rng.integers(0, 6, size=2)
        words = np.concatenate([
            rng.integers(1, 21, pos), rng.integers(21, 41, neg),
            rng.integers(41, vocab_size, length - pos - neg),
        ])  # fmt: skip
        x[i, :length] = rng.permutation(words)
        y[i] = int(pos > neg)
    split = int(0.8 * n)
    note = f"synthetic reviews ({n} rows, vocabulary {vocab_size}, up to {maxlen} tokens)"
    return (x[:split], y[:split]), (x[split:], y[split:]), note
