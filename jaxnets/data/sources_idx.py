"""MNIST and Fashion-MNIST read from the four IDX files in a folder.

Where the files are looked for, in order (each folder may hold the files gzip'd or raw):

1. ``data_dir=``, its subfolder ``fashion_mnist`` / ``mnist``, or the folder itself;
2. ``$JAXNETS_DATA/fashion_mnist`` (or ``mnist``), then ``$JAXNETS_DATA`` itself, then the
   tree of an extracted Debian package under it (``usr/share/datasets/fashion-mnist``);
3. for Fashion-MNIST, where the Debian package ``dataset-fashion-mnist`` installs them:
   ``/usr/share/datasets/fashion-mnist``.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from jaxnets.data.datasets import Dataset, candidate_dirs, register
from jaxnets.data.idx import read_idx
from jaxnets.errors import DatasetNotFoundError, FormatError

FASHION_DEB_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_PARTS = {
    "x_train": ("train", "images", 3),
    "y_train": ("train", "labels", 1),
    "x_test": ("t10k", "images", 3),
    "y_test": ("t10k", "labels", 1),
}


def _find_file(folder: Path, split: str, kind: str, rank: int) -> Path | None:
    # Both the original "train-images-idx3-ubyte" and the common "train-images.idx3-ubyte".
    for sep in ("-", "."):
        for suffix in (".gz", ""):
            path = folder / f"{split}-{kind}{sep}idx{rank}-ubyte{suffix}"
            if path.is_file():
                return path
    return None


# The first training labels of each set. MNIST and Fashion-MNIST files carry the same
# names, and both loaders also search $JAXNETS_DATA itself: these tell them apart.
FIRST_TRAIN_LABELS = {
    "mnist": (5, 0, 4, 1, 9, 2, 1, 3, 1, 4, 3, 5, 3, 6, 1, 7),
    "fashion_mnist": (9, 0, 0, 3, 0, 2, 7, 2, 5, 5, 0, 9, 5, 5, 7, 9),
}


def _holds(files: dict[str, Path], other: str | None) -> bool:
    """False when the files' first training labels are those of the ``other`` set."""
    if other is None:
        return True
    try:
        first = read_idx(files["y_train"], limit=16)
    except (FormatError, OSError):
        return True  # unreadable here: the loader reports it with its context
    return tuple(first.tolist()) != FIRST_TRAIN_LABELS[other]


def find_idx_files(
    data_dir: str | os.PathLike | None,
    subdirs: tuple[str, ...],
    system: tuple = (),
    other: str | None = None,
) -> dict[str, Path] | None:
    """The four IDX files from the first folder that holds all of them, or None.

    A folder whose files are recognizably those of the ``other`` set (``"mnist"``
    or ``"fashion_mnist"``, by `FIRST_TRAIN_LABELS`) is passed over.
    """
    extracted = [f"usr/share/datasets/{s}" for s in subdirs]
    for folder in candidate_dirs(data_dir, (*subdirs, *extracted), system):
        files = {key: _find_file(folder, *part) for key, part in _PARTS.items()}
        if all(files.values()) and _holds(files, other):
            return files
    return None


def _load_idx(
    name: str,
    files: dict[str, Path] | None,
    install: str,
    flatten: bool,
    limit: int | None,
    class_names,
) -> Dataset:
    if files is None:
        raise DatasetNotFoundError(
            f"{name}: IDX files not found (train-images-idx3-ubyte[.gz], "
            f"train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
            f"t10k-labels-idx1-ubyte[.gz]; MNIST and Fashion-MNIST share these names, and a "
            f"folder holding the other set's files is passed over). {install}"
        )
    arrays = {}
    for key, path in files.items():
        n = None if limit is None else min(limit, _header_rows(path))
        arrays[key] = read_idx(path, limit=n)
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise FormatError(
                f"{name} {split}: expected images (n, H, W) and labels (n,), got "
                f"{x.shape} and {y.shape} from {files[f'x_{split}'].parent}."
            )
        if y.size and y.max() >= 10:
            raise FormatError(f"{name} {split}: labels must lie in 0-9, found {y.max()}.")
        # Divided in place: a second (60000, 28, 28) float32 array would cost another
        # ~190 MB of fresh pages, which took 0.3-0.4 s to fault in on the 2-core machine.
        x = x.astype(np.float32)
        np.divide(x, np.float32(255), out=x)  # the same float32 values as x / 255.0
        arrays[f"x_{split}"] = x.reshape(len(x), -1) if flatten else x[..., None]
        arrays[f"y_{split}"] = y.astype(np.int32)
    return Dataset(
        **arrays,
        num_classes=10,
        input_shape=arrays["x_train"].shape[1:],
        task="classification",
        name=name,
        class_names=class_names,
    )


def _header_rows(path: Path) -> int:
    """Number of rows declared in an IDX header (reads only the header)."""
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw) if gz else raw
        try:
            head = stream.read(8)
        except (OSError, EOFError, zlib.error) as err:
            raise FormatError(f"{path}: corrupt gzip stream ({err}).") from err
    if len(head) < 8:
        raise FormatError(f"{path}: truncated IDX header.")
    return int.from_bytes(head[4:8], "big")


@register("fashion_mnist", "fashion-mnist")
def fashion_mnist(
    data_dir: str | os.PathLike | None = None, flatten: bool = False, limit: int | None = None
) -> Dataset:
    """Fashion-MNIST (Zalando), 60000 + 10000 grayscale 28x28 images, 10 classes.

    Args:
      data_dir: folder with the IDX files (see the module docstring for the search order).
      flatten: return ``(n, 784)`` vectors instead of ``(n, 28, 28, 1)`` images.
      limit: keep only the first ``limit`` rows of each split (fast tests).
    """
    files = find_idx_files(
        data_dir, ("fashion_mnist", "fashion-mnist"), (FASHION_DEB_DIR,), other="mnist"
    )
    install = (
        "Install them with `apt-get install -y dataset-fashion-mnist` (as root; files go to "
        f"{FASHION_DEB_DIR}), or `apt-get download dataset-fashion-mnist && dpkg-deb -x "
        "dataset-fashion-mnist_*.deb <dir>` and set JAXNETS_DATA=<dir>, or pass data_dir=."
    )
    return _load_idx("fashion_mnist", files, install, flatten, limit, FASHION_CLASSES)


@register("mnist")
def mnist(
    data_dir: str | os.PathLike | None = None, flatten: bool = False, limit: int | None = None
) -> Dataset:
    """MNIST digits, 60000 + 10000 grayscale 28x28 images, from IDX files you provide.

    Args:
      data_dir: folder with the four IDX files (or set ``JAXNETS_DATA``, with the
        files in ``$JAXNETS_DATA/mnist``).
      flatten: return ``(n, 784)`` vectors instead of ``(n, 28, 28, 1)`` images.
      limit: keep only the first ``limit`` rows of each split.
    """
    files = find_idx_files(data_dir, ("mnist",), other="fashion_mnist")
    install = (
        "MNIST has no offline package: copy the four IDX files into a folder and pass "
        "data_dir=<folder>, or put them in $JAXNETS_DATA/mnist. For an installable "
        "alternative use load('fashion_mnist') after `apt-get install -y dataset-fashion-mnist`."
    )
    return _load_idx("mnist", files, install, flatten, limit, tuple(str(d) for d in range(10)))
