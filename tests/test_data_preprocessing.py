"""Preprocessing against scikit-learn's scalers and hand computations."""

import numpy as np
import pytest
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from jaxnets.data.preprocessing import (
    normalize,
    one_hot,
    sequence_windows,
    split_indices,
    standardize,
    train_val_split,
)
from jaxnets.errors import ConfigError, DataError, ShapeError


def test_standardize_matches_sklearn_with_train_statistics(rng):
    x_train = rng.normal(3.0, 2.0, size=(50, 4)).astype(np.float32)
    x_test = rng.normal(0.0, 5.0, size=(7, 4)).astype(np.float32)
    a, b, stats = standardize(x_train, x_test)
    scaler = StandardScaler().fit(x_train)
    np.testing.assert_allclose(a, scaler.transform(x_train), atol=1e-5)
    np.testing.assert_allclose(b, scaler.transform(x_test), atol=1e-5)
    np.testing.assert_allclose(stats.mean, scaler.mean_, rtol=1e-6)
    np.testing.assert_allclose(stats.std, scaler.scale_, rtol=1e-6)
    assert a.dtype == b.dtype == np.float32


def test_standardize_constant_feature_is_centered_not_blown_up():
    x, stats = standardize(np.array([[1.0, 7.0], [3.0, 7.0], [5.0, 7.0]]))
    assert np.isfinite(x).all() and (x[:, 1] == 0).all() and stats.std[1] == 1.0


def test_normalize_matches_minmax(rng):
    x_train, x_test = rng.uniform(-3, 9, size=(20, 3)), rng.uniform(-5, 12, size=(4, 3))
    a, b, _ = normalize(x_train, x_test)
    scaler = MinMaxScaler().fit(x_train)
    np.testing.assert_allclose(a, scaler.transform(x_train), atol=1e-6)
    np.testing.assert_allclose(b, scaler.transform(x_test), atol=1e-6)


def test_feature_shape_mismatch():
    with pytest.raises(ShapeError):
        standardize(np.zeros((3, 2)), np.zeros((3, 5)))


def test_one_hot():
    assert np.array_equal(one_hot(np.array([1, 0, 3]), 4), np.eye(4, dtype=np.float32)[[1, 0, 3]])
    assert one_hot(np.array([2]), dtype=np.int32).tolist() == [[0, 0, 1]]
    with pytest.raises(DataError, match=r"\[0, 3\)"):
        one_hot(np.array([0, 3]), 3)
    with pytest.raises(DataError):
        one_hot(np.array([0.5]))


def test_train_val_split_stratified_and_disjoint():
    y = np.repeat(np.arange(4), [40, 20, 20, 20])
    x = np.arange(len(y))
    xt, yt, xv, yv = train_val_split(x, y, 0.25, seed=1)
    assert len(xv) == 25 and len(xt) == 75
    assert set(xt.tolist()).isdisjoint(xv.tolist())
    assert sorted(np.concatenate([xt, xv]).tolist()) == x.tolist()
    assert np.bincount(yv).tolist() == [10, 5, 5, 5]  # the 40/20/20/20 proportions
    assert np.array_equal(y[xt], yt) and np.array_equal(y[xv], yv)
    again = train_val_split(x, y, 0.25, seed=1)
    assert np.array_equal(again[2], xv)
    assert not np.array_equal(train_val_split(x, y, 0.25, seed=2)[2], xv)


def test_train_val_split_regression_needs_stratify_false():
    x, y = np.zeros((10, 2)), np.linspace(0, 1, 10)
    with pytest.raises(DataError, match="stratify=False"):
        train_val_split(x, y, 0.2)
    assert train_val_split(x, y, 0.2, stratify=False)[3].shape == (2,)


def test_split_indices_errors():
    with pytest.raises(ConfigError):
        split_indices(10, 1.5)
    with pytest.raises(DataError, match="stratify=False"):
        split_indices(3, 0.5, stratify=np.array([0, 1, 2]))


def test_sequence_windows():
    x, y = sequence_windows(np.arange(10), 4, stride=3)
    assert x.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6]]
    assert y.tolist() == [[1, 2, 3, 4], [4, 5, 6, 7]]
    assert sequence_windows(np.arange(3), 5)[0].shape == (0, 5)
    with pytest.raises(ConfigError):
        sequence_windows(np.arange(3), 0)


@pytest.mark.parametrize("stratified", [False, True])
def test_numpy_split_equals_scikit_learns_train_test_split(stratified):
    from sklearn.model_selection import train_test_split

    from jaxnets.data.sklearn_split import train_test_indices

    rng = np.random.default_rng(0)
    label_sets = [
        rng.integers(0, 3, 50),
        rng.integers(0, 10, 1797),
        np.repeat([0, 1], [90, 10]),
        np.arange(40) % 7,
    ]
    for labels in label_sets:
        for seed in (0, 1, 7, 123):
            for fraction in (0.1, 0.2, 0.25, 0.5):
                n = len(labels)
                stratify = labels if stratified else None
                try:
                    want = train_test_split(
                        np.arange(n), test_size=fraction, random_state=seed, stratify=stratify
                    )
                except ValueError:  # e.g. fewer test rows than classes: ours refuses too
                    with pytest.raises(ValueError):
                        train_test_indices(n, fraction, seed, stratify)
                    continue
                got = train_test_indices(n, fraction, seed, stratify)
                np.testing.assert_array_equal(got[0], want[0])
                np.testing.assert_array_equal(got[1], want[1])


def test_digits_read_from_the_bundled_file_equal_load_digits():
    from sklearn.datasets import load_digits

    from jaxnets.data.sources_sklearn import _bundled_digits

    pixels, target = _bundled_digits()
    raw = load_digits()
    np.testing.assert_array_equal(pixels, raw.data)
    np.testing.assert_array_equal(target, raw.target)
