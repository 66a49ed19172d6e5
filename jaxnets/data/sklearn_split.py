"""scikit-learn's ``train_test_split`` of row indices, in NumPy alone.

``train_test_indices(n, fraction, seed, stratify)`` returns what
``sklearn.model_selection.train_test_split(np.arange(n), test_size=fraction,
random_state=seed, stratify=stratify)`` returns (sklearn 1.x ShuffleSplit and
StratifiedShuffleSplit, same RandomState draws), so splits stay those of
earlier jaxnets versions while loading a dataset no longer imports
scikit-learn and SciPy: over a second of every ``jaxnets train`` start.
``tests/test_data_preprocessing.py`` checks it against scikit-learn itself.

Example:
  >>> train, test = train_test_indices(10, 0.2, seed=0)
  >>> sorted(train.tolist() + test.tolist()) == list(range(10)), len(test)
  (True, 2)
"""

from __future__ import annotations

import math

import numpy as np


def _approximate_mode(class_counts, n_draws, rng):
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            inds = rng.choice(inds, size=add_now, replace=False)
            floored[inds] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def train_test_indices(n, fraction, seed, stratify=None):
    """``(train, test)`` exactly as sklearn's ``train_test_split(np.arange(n), ...)``."""
    n_test = math.ceil(fraction * n)
    n_train = n - n_test
    if n_train == 0:
        raise ValueError(f"With n_samples={n}, test_size={fraction} the training set is empty.")
    rng = np.random.RandomState(seed)
    if stratify is None:
        perm = rng.permutation(n)
        return perm[n_test : n_test + n_train], perm[:n_test]
    classes, y_indices, class_counts = np.unique(stratify, return_inverse=True, return_counts=True)
    if np.min(class_counts) < 2:
        raise ValueError("The least populated class in y has only 1 member")
    if n_train < len(classes) or n_test < len(classes):
        raise ValueError("train and test sizes must be at least the number of classes")
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train, test = [], []
    for i in range(len(classes)):
        perm = class_indices[i].take(rng.permutation(class_counts[i]), mode="clip")
        train.extend(perm[: n_i[i]])
        test.extend(perm[n_i[i] : n_i[i] + t_i[i]])
    return rng.permutation(train), rng.permutation(test)
