"""The `Dataset` container and the registry behind `load` and `names`.

Loaders live in one small module per source (`sources_sklearn`, `sources_idx`,
`mnist1d_source`, `synthetic`, `ucr`, `austen`) and register themselves with
`register`; `jaxnets.data` imports them all, so the registry is always full.

Example:
  >>> from jaxnets import data
  >>> ds = data.load("digits")
  >>> ds.x_train.shape, ds.x_test.shape, ds.num_classes, ds.input_shape
  ((1437, 64), (360, 64), 10, (64,))
  >>> data.load("digts")
  Traceback (most recent call last):
  ...
  jaxnets.errors.UnknownNameError: unknown dataset 'digts'; did you mean 'digits'? Valid datasets: ...
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from jaxnets.errors import ConfigError, DataError, lookup, suggest

TASKS = ("classification", "regression", "language_modeling", "tagging")
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Numpy arrays of one dataset plus what a model needs to know about them.

    Attributes:
      x_train, y_train, x_test, y_test: inputs and targets, rows aligned.
      num_classes: number of classes (vocabulary size for language modeling),
        ``None`` for regression.
      input_shape: shape of one example, e.g. ``(28, 28, 1)``.
      task: ``"classification"``, ``"regression"``, ``"language_modeling"``
        (targets are the next tokens, ``y[:, t]`` follows ``x[:, t]``) or
        ``"tagging"`` (a class per step: ``y[:, t]`` labels ``x[:, t]``).
      name: registry name.
      class_names: label (or vocabulary symbol) of each class index, if known.
      x_val, y_val: optional validation split.
      x_mask_train, x_mask_val, x_mask_test: optional ``(n, T)`` bool step masks
        for padded variable-length sequences (True = real step).
      vocab_size: for int token inputs, the number of distinct tokens (for a
        language model the same as ``num_classes``; for tagging, another number).

    Example:
      >>> import numpy as np
      >>> from jaxnets.data import Dataset
      >>> x, y = np.zeros((10, 3), np.float32), np.arange(10, dtype=np.int32) % 2
      >>> ds = Dataset(x[:8], y[:8], x[8:], y[8:], num_classes=2, input_shape=(3,),
      ...              task="classification", name="toy")
      >>> ds
      Dataset('toy', classification, train=8, test=2, input_shape=(3,), num_classes=2)
      >>> ds.arrays("test")["y"].tolist()
      [0, 1]
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int | None
    input_shape: tuple[int, ...]
    task: str
    name: str
    class_names: tuple[str, ...] | None = None
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    x_mask_train: np.ndarray | None = None
    x_mask_val: np.ndarray | None = None
    x_mask_test: np.ndarray | None = None
    vocab_size: int | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {self.task!r}.")
        if (self.x_val is None) != (self.y_val is None):
            raise DataError("x_val and y_val must be given together.")
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        for split in SPLITS:
            x, y, m = self._get(split)
            if x is None:
                continue
            if len(x) != len(y) or (m is not None and len(m) != len(x)):
                raise DataError(
                    f"{self.name} {split}: x has {len(x)} rows, y {len(y)}"
                    + (f", x_mask {len(m)}" if m is not None else "")
                    + "; every array of a split needs the same number of rows."
                )
            if tuple(x.shape[1:]) != self.input_shape:
                raise DataError(
                    f"{self.name} {split}: examples have shape {x.shape[1:]}, "
                    f"but input_shape says {self.input_shape}."
                )

    def _get(self, split: str):
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, got {split!r}.")
        return (
            getattr(self, f"x_{split}"),
            getattr(self, f"y_{split}"),
            getattr(self, f"x_mask_{split}"),
        )

    def arrays(self, split: str = "train") -> dict[str, np.ndarray]:
        """The batch dict of one split: ``x``, ``y`` and ``x_mask`` when present.

        Example:
          >>> from jaxnets import data
          >>> sorted(data.load("synthetic", n=8).arrays("test"))
          ['x', 'y']
        """
        x, y, mask = self._get(split)
        if x is None:
            raise DataError(
                f"{self.name} has no {split!r} split; load it with val_fraction=0.1 "
                "or call with_validation()."
            )
        out = {"x": x, "y": y}
        if mask is not None:
            out["x_mask"] = mask
        return out

    def with_validation(self, fraction: float = 0.1, seed: int = 0) -> Dataset:
        """Moves ``fraction`` of the training rows into a validation split.

        Classification splits are stratified by label.

        Example:
          >>> from jaxnets import data
          >>> ds = data.load("digits").with_validation(0.1)
          >>> len(ds.x_train), len(ds.x_val), len(ds.x_test)
          (1293, 144, 360)
        """
        from jaxnets.data.preprocessing import split_indices

        stratify = self.y_train if self.task == "classification" else None
        keep, held = split_indices(len(self.x_train), fraction, seed, stratify)
        mask = self.x_mask_train
        return dataclasses.replace(
            self,
            x_train=self.x_train[keep],
            y_train=self.y_train[keep],
            x_val=self.x_train[held],
            y_val=self.y_train[held],
            x_mask_train=None if mask is None else mask[keep],
            x_mask_val=None if mask is None else mask[held],
        )

    def __repr__(self) -> str:
        sizes = ", ".join(
            f"{split}={len(getattr(self, f'x_{split}'))}"
            for split in SPLITS
            if getattr(self, f"x_{split}") is not None
        )
        return (
            f"Dataset({self.name!r}, {self.task}, {sizes}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes})"
        )


_REGISTRY: dict[str, Callable[..., Dataset]] = {}


def register(*names: str) -> Callable:
    """Decorator adding a loader function to the registry under ``names``.

    Args:
      *names: names `load` will accept for the loader (matched case-insensitively).

    Returns:
      A decorator that registers the function and returns it unchanged.

    Raises:
      ConfigError: no name, a name that is not a non-empty string (such as the
        function itself, from ``@register`` without parentheses), a loader that
        is not callable, or a name another loader already holds (re-running the
        same definition, as a notebook cell does, replaces it).

    Example:
      >>> import numpy as np
      >>> from jaxnets.data import Dataset, load, register
      >>> @register("my_ramp")
      ... def ramp(n: int = 4):
      ...     x = np.arange(n, dtype=np.float32)[:, None]
      ...     return Dataset(x, 2 * x[:, 0], x, 2 * x[:, 0], None, (1,), "regression", "my_ramp")
      >>> load("MY_RAMP", n=6)
      Dataset('my_ramp', regression, train=6, test=6, input_shape=(1,), num_classes=None)
      >>> from jaxnets.data import datasets
      >>> del datasets._REGISTRY["my_ramp"]  # undo the registration (not needed in real use)
    """

    _check_names(names)

    def wrap(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        if not callable(fn):
            raise ConfigError(
                f"register({', '.join(map(repr, names))}) decorates a loader function that "
                f"returns a Dataset, got {type(fn).__name__} {fn!r}."
            )
        for name in names:
            _check_free(name.lower(), fn)
        for name in names:
            _REGISTRY[name.lower()] = fn
        return fn

    return wrap


def _check_names(names: tuple) -> None:
    if not names:
        raise ConfigError('register needs at least one name: @register("my_data").')
    for name in names:
        if callable(name):  # @register without parentheses passes the function itself
            raise ConfigError(
                f'register takes the dataset\'s names, not the loader: write @register("name") '
                f"above def {getattr(name, '__name__', name)}, not @register."
            )
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"dataset names must be non-empty strings, got {name!r}.")


def _same_definition(a: Callable, b: Callable) -> bool:
    """Whether two loaders come from the same source definition (a re-run cell, a reload)."""
    key = ("__module__", "__qualname__")
    return all(getattr(a, k, None) == getattr(b, k, object()) for k in key)


def _check_free(name: str, fn: Callable) -> None:
    """Refuses to silently replace another loader (a built-in one above all)."""
    old = _REGISTRY.get(name)
    if old is None or old is fn or _same_definition(old, fn):
        return
    where = f"{getattr(old, '__module__', '?')}.{getattr(old, '__qualname__', old)}"
    raise ConfigError(
        f"dataset name {name!r} is already registered to {where}; choose another name "
        f"(or delete it first: del jaxnets.data.datasets._REGISTRY[{name!r}])."
    )


def names() -> list[str]:
    """Sorted names accepted by `load`.

    Example:
      >>> "digits" in names() and "mnist1d" in names()
      True
    """
    return sorted(_REGISTRY)


def canonical_name(name: str) -> str:
    """The name a dataset was first registered under, for any of its names in any case.

    Options that depend on the dataset (``image=True`` for digits...) are keyed
    by this name, so ``"Digits"`` or an alias such as ``"jane_austen"`` gets them too.

    Args:
      name: any name `load` accepts (case-insensitive).

    Returns:
      The registry name, e.g. ``"digits"``.

    Raises:
      UnknownNameError: unknown name (lists valid ones).

    Example:
      >>> canonical_name("Digits"), canonical_name("jane_austen"), canonical_name("FASHION-MNIST")
      ('digits', 'austen', 'fashion_mnist')
    """
    fn = lookup(name, _REGISTRY, kind="dataset")
    return next(key for key, loader in _REGISTRY.items() if loader is fn)


def load(name: str = "digits", *, val_fraction: float = 0.0, val_seed: int = 0, **kwargs):
    """Loads a registered dataset by name.

    Args:
      name: a name from `names()` (case-insensitive).
      val_fraction: if > 0, hold this share of the training rows out as ``x_val``/``y_val``.
      val_seed: seed of that validation split.
      **kwargs: options of the loader (``seed``, ``image``, ``limit``, ``data_dir``...).

    Returns:
      The `Dataset`, with ``x_val``/``y_val`` when ``val_fraction`` > 0.

    Raises:
      UnknownNameError: unknown name (lists valid ones).
      ConfigError: an option the loader does not take.
      DatasetNotFoundError: files missing; the message says how to install them.

    Example:
      >>> from jaxnets import data
      >>> ds = data.load("digits", val_fraction=0.1, image=True)
      >>> ds.x_train.shape, ds.x_val.shape, ds.x_test.shape
      ((1293, 8, 8, 1), (144, 8, 8, 1), (360, 8, 8, 1))
    """
    fn = lookup(name, _REGISTRY, kind="dataset")
    _check_options(name, fn, kwargs)
    ds = fn(**kwargs)
    if not isinstance(ds, Dataset):
        raise DataError(
            f"the loader of dataset {name!r} ({getattr(fn, '__qualname__', fn)}) returned "
            f"{type(ds).__name__}; a loader must return a jaxnets.data.Dataset."
        )
    if val_fraction:
        ds = ds.with_validation(val_fraction, val_seed)
    return ds


def _check_options(name: str, fn: Callable, kwargs: dict) -> None:
    """Refuses options the loader does not take (a loader with ``**kwargs`` takes any)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    accepted = [
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(
                f"dataset {name!r} has no option {key!r}{suggest(key, accepted) or '.'} "
                f"Its options: {', '.join(accepted) or 'none'} (plus val_fraction, val_seed)."
            )


def cache_dir() -> Path:
    """Where generated data is cached: ``$JAXNETS_CACHE`` or ``~/.cache/jaxnets``.

    Example:
      >>> import os
      >>> from pathlib import Path
      >>> from unittest import mock
      >>> from jaxnets.data import cache_dir
      >>> with mock.patch.dict(os.environ, JAXNETS_CACHE="/tmp/jaxnets-cache"):
      ...     print(cache_dir().as_posix())
      /tmp/jaxnets-cache
      >>> with mock.patch.dict(os.environ, JAXNETS_CACHE=""):  # empty or unset: the default
      ...     cache_dir() == Path.home() / ".cache" / "jaxnets"
      True
    """
    return Path(os.environ.get("JAXNETS_CACHE") or Path.home() / ".cache" / "jaxnets")


def data_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for dataset files: ``data_dir`` if given, else ``$JAXNETS_DATA``."""
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    env = os.environ.get("JAXNETS_DATA")
    return [Path(env).expanduser()] if env else []


def candidate_dirs(
    data_dir, subdirs: Iterable[str], system: Iterable[str | os.PathLike] = ()
) -> list[Path]:
    """Folders to try, in order: each root's ``subdirs``, the root itself, ``system``.

    An explicit ``data_dir`` is the only root searched, so a wrong path fails loudly
    instead of silently loading files from elsewhere.
    """
    out = []
    for root in data_roots(data_dir):
        out += [root / sub for sub in subdirs] + [root]
    return out + ([] if data_dir is not None else [Path(p) for p in system])


def stratified_split(x, y, test_fraction: float, seed: int):
    """``(x_train, y_train, x_test, y_test)`` keeping class proportions (sklearn)."""
    from jaxnets.data.preprocessing import split_indices

    keep, held = split_indices(len(y), test_fraction, seed, y)
    return x[keep], y[keep], x[held], y[held]
