"""Same/different pairs from a classification dataset, for siamese verification.

`pair_dataset` turns each split of a classification `Dataset` into as many
pairs as it has examples: pair ``i`` puts example ``i`` first and, for every
other pair, a partner of the same class (label 1, "same") or of another class
(label 0, "different"), so the two labels are balanced to within one pair.
Partners come from the same split only, so no test image is ever seen in
training, and the pairs are a pure function of ``seed`` and the split.

Example:
  >>> import numpy as np
  >>> pairs, same = make_pairs(np.arange(6), np.array([0, 0, 0, 1, 1, 1]), seed=0)
  >>> pairs.shape, same.tolist()
  ((6, 2), [1, 0, 1, 0, 1, 0])
  >>> bool(all((pairs[:, 0] // 3 == pairs[:, 1] // 3) == (same == 1)))
  True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxnets.data.datasets import SPLITS, Dataset
from jaxnets.errors import DataError

PAIR_CLASSES = ("different", "same")


def make_pairs(
    x: np.ndarray, y: np.ndarray, seed: int | Sequence[int] = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(n, 2, *x.shape[1:])`` of rows of ``x`` and their int32 "same class" labels.

    Args:
      x: examples ``(n, ...)``.
      y: int class labels ``(n,)``, at least two classes, each with two examples.
      seed: seed (or seed sequence) of the partners drawn.
    """
    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2 or counts.min() < 2:
        raise DataError(
            "pairs need at least two classes with two examples each; got class counts "
            f"{dict(zip(classes.tolist(), counts.tolist(), strict=True))}."
        )
    rng = np.random.default_rng(seed)
    members = {c: np.flatnonzero(y == c) for c in classes.tolist()}
    others = {c: np.flatnonzero(y != c) for c in classes.tolist()}
    same = (np.arange(len(y)) % 2 == 0).astype(np.int32)  # alternate: balanced labels
    partner = np.empty(len(y), dtype=np.int64)
    for i, c in enumerate(y.tolist()):
        if same[i]:
            pool = members[c]
            # Draw among the class minus example i itself: shift draws at or past it by one.
            j = rng.integers(len(pool) - 1)
            partner[i] = pool[j + (pool[j] >= i)]
        else:
            partner[i] = rng.choice(others[c])
    return np.stack([x, x[partner]], axis=1), same


def pair_dataset(dataset: Dataset, seed: int = 0) -> Dataset:
    """The verification dataset of ``dataset``: pairs drawn within each split, 2 classes.

    Example:
      >>> from jaxnets import data
      >>> ds = pair_dataset(data.load("digits"))
      >>> ds.x_train.shape, ds.x_test.shape, ds.num_classes, float(ds.y_test.mean())
      ((1437, 2, 64), (360, 2, 64), 2, 0.5)
    """
    if dataset.task != "classification":
        raise DataError(
            f"pairs are drawn from a classification dataset's classes; {dataset.name} is "
            f"{dataset.task}. Use e.g. digits, fashion_mnist or mnist."
        )
    if dataset.x_mask_train is not None:
        raise DataError(
            f"{dataset.name} holds variable-length sequences (step masks); pairs of them are "
            "not supported. Use a dataset of fixed-shape examples, e.g. digits."
        )
    fields = {}
    for k, split in enumerate(SPLITS):
        x, y = getattr(dataset, f"x_{split}"), getattr(dataset, f"y_{split}")
        if x is not None:
            # Each split has its own stream of draws, so adding a validation split
            # leaves the test pairs unchanged.
            fields[f"x_{split}"], fields[f"y_{split}"] = make_pairs(x, y, seed=[seed, k])
    return dataclasses.replace(
        dataset,
        **fields,
        num_classes=len(PAIR_CLASSES),
        input_shape=(2, *dataset.input_shape),
        name=f"{dataset.name}_pairs",
        class_names=PAIR_CLASSES,
    )
