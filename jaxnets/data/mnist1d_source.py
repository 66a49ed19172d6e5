"""MNIST-1D (Greydanus & Kobak 2020), generated locally and cached as ``.npz``.

``mnist1d.data.make_dataset`` reproduces the paper's frozen data bit for bit in
about a second; the result is cached in `cache_dir()` (``$JAXNETS_CACHE`` or
``~/.cache/jaxnets``) and read back with ``allow_pickle=False``.
``mnist1d.data.get_dataset`` is never called: it tries a download first.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import random
import zipfile
import zlib
from pathlib import Path

import numpy as np

from jaxnets.data.datasets import Dataset, cache_dir, register
from jaxnets.errors import DatasetNotFoundError, FormatError

_KEYS = ("x", "y", "x_test", "y_test", "t")


_MISSING = (
    "mnist1d: the generator package is not installed. Install it with "
    "`pip install 'jaxnets[mnist1d]'` (or `pip install mnist1d`)."
)


def _cache_key(num_samples: int | None, seed: int | None) -> str:
    """Names the cached arrays without importing the generator.

    ``mnist1d.data`` imports SciPy's interpolation and Matplotlib's pyplot
    (0.4 s, most of a warm ``jaxnets train --model lstm`` start), so a cached
    load only reads the package's installed version: a new version may change
    the generator's defaults, and gets a new file.
    """
    try:
        version = importlib.metadata.version("mnist1d")
    except importlib.metadata.PackageNotFoundError as err:
        raise DatasetNotFoundError(_MISSING) from err
    key = {"mnist1d": version, "num_samples": num_samples, "seed": seed}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def _args(num_samples: int | None, seed: int | None) -> dict:
    try:
        import mnist1d.data
    except ImportError as err:
        raise DatasetNotFoundError(_MISSING) from err
    args = mnist1d.data.get_dataset_args(as_dict=True)
    args.pop("url", None)  # only used by the downloading path
    if num_samples is not None:
        args["num_samples"] = int(num_samples)
    if seed is not None:
        args["seed"] = int(seed)
    return args


def _generate(args: dict) -> dict[str, np.ndarray]:
    import mnist1d.data
    from mnist1d.utils import ObjectView

    # make_dataset seeds the global generators; leave the caller's state as it was.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        raw = mnist1d.data.make_dataset(ObjectView(dict(args)))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {key: np.asarray(raw[key]) for key in _KEYS}


def generate_mnist1d(
    num_samples: int | None = None, seed: int | None = None, cache: bool = True
) -> dict[str, np.ndarray]:
    """The raw MNIST-1D arrays ``x, y, x_test, y_test, t``, from the cache when possible.

    Args:
      num_samples, seed: override the paper's generator arguments (5000, 42).
      cache: read and write the ``.npz`` cache.
    """
    num_samples = None if num_samples is None else int(num_samples)
    seed = None if seed is None else int(seed)
    path = cache_dir() / f"mnist1d_{_cache_key(num_samples, seed)}.npz"
    if cache and path.is_file():
        cached = _read_cache(path)
        if cached is not None:
            return cached
    arrays = _generate(_args(num_samples, seed))
    if cache:
        _save_atomic(path, arrays)
    return arrays


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is damaged (then it is regenerated).

    A half-written or corrupted ``.npz`` raises ``zipfile.BadZipFile`` (a bad
    CRC or a truncated archive), which is neither an ``OSError`` nor a
    ``ValueError``; a readable file whose arrays do not line up (rows of ``x``
    and ``y``, features of train and test) is as unusable, so both count as damage.
    """
    try:
        # Opened here, so that a file np.load refuses is still closed.
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in _KEYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
        return None
    x, y, x_test, y_test = (arrays[key] for key in ("x", "y", "x_test", "y_test"))
    consistent = (
        x.ndim == 2
        and x_test.shape[1:] == x.shape[1:]
        and y.shape == x.shape[:1]
        and y_test.shape == x_test.shape[:1]
        and len(x) > 0
        and len(x_test) > 0
    )
    return arrays if consistent else None


def _save_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # Parallel test workers may generate at once: write aside, then rename.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache is not an error; the data is still returned


@register("mnist1d")
def mnist1d(
    as_sequence: bool = False,
    num_samples: int | None = None,
    seed: int | None = None,
    cache: bool = True,
) -> Dataset:
    """MNIST-1D: 4000 + 1000 one-dimensional signals of length 40, 10 classes.

    Args:
      as_sequence: return ``(n, 40, 1)`` (a sequence with one feature) instead of ``(n, 40)``.
      num_samples, seed: generator arguments (defaults give the paper's data).
      cache: cache the generated arrays in `cache_dir()`.

    Raises:
      DatasetNotFoundError: the ``mnist1d`` package is missing.
    """
    raw = generate_mnist1d(num_samples, seed, cache)
    x_train, x_test = raw["x"].astype(np.float32), raw["x_test"].astype(np.float32)
    if x_train.ndim != 2 or x_test.shape[1:] != x_train.shape[1:]:
        raise FormatError(f"mnist1d: unexpected shapes {x_train.shape} and {x_test.shape}.")
    if as_sequence:
        x_train, x_test = x_train[..., None], x_test[..., None]
    return Dataset(
        x_train,
        raw["y"].astype(np.int32),
        x_test,
        raw["y_test"].astype(np.int32),
        num_classes=10,
        input_shape=x_train.shape[1:],
        task="classification",
        name="mnist1d",
        class_names=tuple(str(d) for d in range(10)),
    )
