"""Dataset registry and loaders: splits, scaling, caching, install messages."""

import importlib.metadata
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits

from jaxnets import data
from jaxnets.data import Dataset
from jaxnets.data.idx import write_idx
from jaxnets.data.sources_idx import FASHION_DEB_DIR
from jaxnets.errors import ConfigError, DataError, DatasetNotFoundError, UnknownNameError


@pytest.fixture(scope="module")
def mnist1d_cache(tmp_path_factory):
    """MNIST-1D generated once into a private cache folder."""
    cache = tmp_path_factory.mktemp("jaxnets_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAXNETS_CACHE", str(cache))
        state = np.random.get_state()[1].copy()
        ds = data.load("mnist1d")
        assert np.array_equal(np.random.get_state()[1], state), "global numpy RNG was touched"
    return cache, ds


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownNameError) as err:
        data.load("fashon_mnist")
    message = str(err.value)
    assert "did you mean 'fashion_mnist'" in message
    for name in ("digits", "mnist1d", "iris", "gunpoint", "austen"):
        assert name in message
    assert isinstance(err.value, KeyError)


def test_names_and_case_insensitive_lookup():
    assert data.names() == sorted(data.names())
    assert data.load("DIGITS").name == "digits"


def test_unknown_option_is_a_config_error_with_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'image'.*seed, test_fraction, image"):
        data.load("digits", imag=True)


def test_digits_split_is_stratified_disjoint_and_seeded(digits):
    raw = load_digits()
    assert digits.x_train.shape == (1437, 64) and digits.x_test.shape == (360, 64)
    assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int32
    assert digits.x_train.min() == 0.0 and digits.x_train.max() == 1.0  # divided by 16
    # Every row maps back to a distinct original row; train and test are disjoint.
    lookup = {row.tobytes(): i for i, row in enumerate((raw.data / 16).astype(np.float32))}
    train = [lookup[r.tobytes()] for r in digits.x_train]
    test = [lookup[r.tobytes()] for r in digits.x_test]
    assert len(set(train)) == 1437 and len(set(test)) == 360 and not set(train) & set(test)
    assert np.array_equal(raw.target[train], digits.y_train)
    # Stratified: each class's test share is within one sample of 20%.
    for c in range(10):
        total = (raw.target == c).sum()
        assert abs((digits.y_test == c).sum() - 0.2 * total) <= 1
    again, other = data.load("digits"), data.load("digits", seed=1)
    assert np.array_equal(again.x_test, digits.x_test) and np.array_equal(
        again.y_test, digits.y_test
    )
    assert not np.array_equal(other.y_test, digits.y_test)


def test_digits_image_layout(digits):
    images = data.load("digits", image=True)
    assert images.x_train.shape == (1437, 8, 8, 1) and images.input_shape == (8, 8, 1)
    assert np.array_equal(images.x_train.reshape(-1, 64), digits.x_train)


@pytest.mark.parametrize("name, classes", [("iris", 3), ("wine", 3), ("breast_cancer", 2)])
def test_tabular_sets_standardized_with_train_statistics(name, classes):
    ds = data.load(name)
    assert ds.num_classes == classes == len(ds.class_names)
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(axis=0), 1.0, atol=1e-4)
    assert np.abs(ds.x_test.mean(axis=0)).max() > 1e-3  # test set was not re-centred
    total = np.bincount(np.concatenate([ds.y_train, ds.y_test]))
    assert np.abs(np.bincount(ds.y_test, minlength=classes) - 0.2 * total).max() <= 1


def test_diabetes_is_regression():
    ds = data.load("diabetes")
    assert ds.task == "regression" and ds.num_classes is None and ds.y_train.dtype == np.float32
    assert len(ds.y_train) + len(ds.y_test) == 442
    scaled = data.load("diabetes", scale_targets=True)
    assert abs(scaled.y_train.mean()) < 1e-5


def test_val_fraction_holds_out_stratified_rows(digits):
    ds = data.load("digits", val_fraction=0.1)
    assert len(ds.x_train) + len(ds.x_val) == len(digits.x_train)
    assert np.array_equal(ds.x_test, digits.x_test)
    assert np.abs(np.bincount(ds.y_val) - 0.1 * np.bincount(digits.y_train)).max() <= 1
    assert set(ds.arrays("val")) == {"x", "y"}
    with pytest.raises(DataError, match="val_fraction"):
        digits.arrays("val")


def test_synthetic_generators_are_seeded():
    a, b = data.load("synthetic", n=64, seed=3), data.load("synthetic", n=64, seed=3)
    assert np.array_equal(a.x_train, b.x_train) and a.x_train.shape == (51, 8)
    assert not np.array_equal(a.x_train, data.load("synthetic", n=64, seed=4).x_train)
    reg = data.load("synthetic_regression", n=40, num_targets=2)
    assert reg.task == "regression" and reg.y_train.shape == (32, 2)
    img = data.load("synthetic_image", n=20, height=6, width=4, channels=3)
    assert (
        img.x_train.shape == (16, 6, 4, 3) and 0.0 <= img.x_train.min() <= img.x_train.max() <= 1.0
    )
    seq = data.load("synthetic_sequence", n=30, length=10)
    lengths = seq.x_mask_train.sum(axis=1)
    assert lengths.min() >= 5 and (seq.x_train[~seq.x_mask_train] == 0).all()


def test_synthetic_blobs_are_learnable():
    from sklearn.linear_model import LogisticRegression

    ds = data.load("synthetic", n=400, num_features=4, num_classes=3, spread=0.5)
    model = LogisticRegression(max_iter=200).fit(ds.x_train, ds.y_train)
    assert model.score(ds.x_test, ds.y_test) > 0.9


def test_dataset_validates_its_arrays():
    x, y = np.zeros((4, 2), np.float32), np.zeros(4, np.int32)
    with pytest.raises(DataError, match="same number of rows"):
        Dataset(x, y[:3], x, y, 2, (2,), "classification", "bad")
    with pytest.raises(DataError, match="input_shape"):
        Dataset(x, y, x, y, 2, (3,), "classification", "bad")
    with pytest.raises(ConfigError, match="task"):
        Dataset(x, y, x, y, 2, (2,), "clustering", "bad")
    assert "train=4" in repr(Dataset(x, y, x, y, 2, (2,), "classification", "ok"))


def test_mnist1d_shapes_cache_and_paper_data(mnist1d_cache, monkeypatch):
    cache, ds = mnist1d_cache
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert np.bincount(np.concatenate([ds.y_train, ds.y_test])).tolist() == [500] * 10
    files = list(cache.glob("mnist1d_*.npz"))
    assert len(files) == 1
    with np.load(files[0], allow_pickle=False) as npz:
        assert np.array_equal(npz["x"].astype(np.float32), ds.x_train)
    monkeypatch.setenv("JAXNETS_CACHE", str(cache))
    seq = data.load("mnist1d", as_sequence=True)  # served from the cache
    assert seq.x_train.shape == (4000, 40, 1) and np.array_equal(seq.x_train[..., 0], ds.x_train)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_mnist1d_logistic_regression_matches_paper(mnist1d_cache):
    from sklearn.linear_model import LogisticRegression

    _, ds = mnist1d_cache
    model = LogisticRegression(max_iter=30).fit(ds.x_train, ds.y_train)
    assert 0.28 < model.score(ds.x_test, ds.y_test) < 0.38  # paper: 32%


def test_mnist1d_cached_load_does_not_import_the_generator(mnist1d_cache):
    # mnist1d.data imports SciPy and Matplotlib (0.4 s): a warm start must not pay it.
    cache, ds = mnist1d_cache
    code = (
        "import sys, numpy as np; from jaxnets import data; "
        "ds = data.load('mnist1d'); "
        "print(sorted(m for m in ('mnist1d', 'scipy.interpolate', 'matplotlib') if m in sys.modules)); "
        "print(float(ds.x_train.sum()))"
    )
    env = {**os.environ, "JAXNETS_CACHE": str(cache)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == "[]"
    assert float(out[1]) == pytest.approx(float(ds.x_train.sum()))


def test_mnist1d_cache_key_follows_arguments_and_version(monkeypatch):
    from jaxnets.data import mnist1d_source

    keys = {mnist1d_source._cache_key(n, s) for n, s in [(None, None), (100, None), (None, 1)]}
    assert len(keys) == 3
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "999.0")
    assert mnist1d_source._cache_key(None, None) not in keys


def test_mnist1d_missing_package_message(monkeypatch, tmp_path):
    import builtins

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    with pytest.raises(DatasetNotFoundError, match=r"pip install 'jaxnets\[mnist1d\]'"):
        data.load("mnist1d")
    monkeypatch.undo()

    # Installed but not importable, with nothing cached: generating needs the import.
    monkeypatch.setenv("JAXNETS_CACHE", str(tmp_path))
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("mnist1d"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(DatasetNotFoundError, match=r"pip install 'jaxnets\[mnist1d\]'"):
        data.load("mnist1d")


def _fake_mnist(folder, n_train=7, n_test=3, compress=True, sep="-"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    parts = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        suffix = ".gz" if compress else ""
        write_idx(images, folder / f"{split}-images{sep}idx3-ubyte{suffix}", compress=compress)
        write_idx(labels, folder / f"{split}-labels{sep}idx1-ubyte{suffix}", compress=compress)
        parts[split] = (images, labels)
    return parts


def test_mnist_from_a_folder_of_idx_files(tmp_path):
    parts = _fake_mnist(tmp_path / "mnist")
    ds = data.load("mnist", data_dir=tmp_path)
    assert ds.x_train.shape == (7, 28, 28, 1) and ds.x_test.shape == (3, 28, 28, 1)
    for split, (images, _) in (("train", parts["train"]), ("test", parts["t10k"])):
        # Exactly the float32 values of images / 255 (the loader divides in place).
        expected = images.astype(np.float32) / 255.0
        assert np.array_equal(getattr(ds, f"x_{split}")[..., 0], expected)
    assert ds.y_test.tolist() == [0, 1, 2] and ds.y_test.dtype == np.int32
    flat = data.load("mnist", data_dir=tmp_path / "mnist", flatten=True, limit=5)
    assert flat.x_train.shape == (5, 784) and flat.x_test.shape == (3, 784)


def test_mnist_via_env_raw_files_and_dot_names(tmp_path, monkeypatch):
    _fake_mnist(tmp_path, compress=False, sep=".")
    monkeypatch.setenv("JAXNETS_DATA", str(tmp_path))
    assert data.load("mnist").x_train.shape == (7, 28, 28, 1)


def test_missing_idx_files_say_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXNETS_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="data_dir"):
        data.load("mnist")
    # An explicit data_dir is the only place searched, even if the package is installed.
    with pytest.raises(DatasetNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        data.load("fashion_mnist", data_dir=tmp_path)


@pytest.mark.skipif(
    not (FASHION_DEB_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not installed: apt-get install -y dataset-fashion-mnist ({FASHION_DEB_DIR})",
)
def test_fashion_mnist_from_the_debian_package(monkeypatch):
    monkeypatch.delenv("JAXNETS_DATA", raising=False)
    ds = data.load("fashion_mnist", limit=500)
    assert ds.x_train.shape == (500, 28, 28, 1) and ds.x_test.shape == (500, 28, 28, 1)
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0 and ds.x_train.max() > 0.9
    assert set(ds.y_train.tolist()) == set(range(10))
    assert ds.class_names[9] == "Ankle boot"
