"""UCR/UEA time-series classification from sktime ``.ts`` files.

Format: header lines ``@key value`` (``@classLabel true a b c`` names the
classes, ``@targetLabel true`` marks regression) until ``@data``; then one line
per series, ``v,v,...:v,v,...:label`` with one ``:``-separated part per
dimension; ``?`` (or ``NaN``) is a missing value. ``#``/``%`` lines are comments.

Series may differ in length: `parse_ts` zero-pads them to the longest and
returns a step mask that is True where every dimension has a real value.

Files are read (never downloaded at run time) from
``$JAXNETS_DATA/ucr/<Name>/<Name>_{TRAIN,TEST}.ts``, or from inside an sktime
wheel (``sktime-*.whl``) placed in ``$JAXNETS_DATA``, ``$JAXNETS_DATA/ucr`` or
`cache_dir()`; `fetch_sktime_wheel` puts one there with pip.

Example:
  >>> from jaxnets.data.ucr import parse_ts
  >>> ts = parse_ts("@classLabel true a b\\n@data\\n1,2,3:a\\n4,?:b\\n")
  >>> ts.x[..., 0].tolist(), ts.mask.tolist(), ts.y.tolist(), ts.class_names
  ([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]], [[True, True, True], [True, False, False]], [0, 1], ('a', 'b'))
"""

from __future__ import annotations

import dataclasses
import math
import os
import zipfile
from pathlib import Path

import numpy as np

from jaxnets.data.datasets import Dataset, cache_dir, candidate_dirs, register
from jaxnets.data.wheels import fetch_wheel, find_wheels
from jaxnets.errors import DatasetNotFoundError, FormatError

# Registry name -> UCR/UEA problem name (all inside the sktime wheel).
PROBLEMS = {
    "gunpoint": "GunPoint",
    "italy_power_demand": "ItalyPowerDemand",
    "japanese_vowels": "JapaneseVowels",
    "arrow_head": "ArrowHead",
    "osu_leaf": "OSULeaf",
    "basic_motions": "BasicMotions",
    "acsf1": "ACSF1",
    "plaid": "PLAID",
    "covid3month": "Covid3Month",
    "tecator": "Tecator",
}
MAX_ELEMENTS = 1 << 28  # padded array size refused beyond this (1 GiB of float32)
_WHEEL_DIR = "sktime/datasets/data"


@dataclasses.dataclass(frozen=True, eq=False)
class TsData:
    """Parsed ``.ts`` file.

    Attributes:
      x: ``(n, T_max, dims)`` float32, zero where padded or missing.
      mask: ``(n, T_max)`` bool, True where every dimension has a value.
      y: ``(n,)`` int32 class indices, float32 regression targets, or None (no labels).
      class_names: class label of each index (classification), else None.
      lengths: ``(n,)`` number of steps of each series before padding.
      problem_name: ``@problemName`` value, if any.

    Example:
      >>> from jaxnets.data import parse_ts
      >>> ts = parse_ts("@problemName Toy\\n@classLabel true a b\\n@data\\n1,2,3:b\\n4,5:a\\n")
      >>> ts.problem_name, ts.class_names, ts.y.tolist(), ts.lengths.tolist()
      ('Toy', ('a', 'b'), [1, 0], [3, 2])
      >>> ts.x.shape, ts.mask.tolist()
      ((2, 3, 1), [[True, True, True], [True, True, False]])
    """

    x: np.ndarray
    mask: np.ndarray
    y: np.ndarray | None
    class_names: tuple[str, ...] | None
    lengths: np.ndarray
    problem_name: str | None = None


def _header(lines, where: str) -> tuple[dict, int]:
    info: dict = {"classes": None, "regression": False, "dims": None}
    for number, line in lines:
        if not line.startswith("@"):
            raise FormatError(f"{where} line {number}: expected an @header line before @data.")
        key, _, value = line[1:].partition(" ")
        key, words = key.lower(), value.split()
        if key == "data":
            return info, number
        if key == "classlabel":
            if not words or words[0].lower() not in ("true", "false"):
                raise FormatError(f"{where} line {number}: expected '@classLabel true a b ...'.")
            if words[0].lower() == "true":
                labels = tuple(words[1:])
                if not labels or len(set(labels)) != len(labels):
                    raise FormatError(
                        f"{where} line {number}: @classLabel true needs distinct class labels."
                    )
                info["classes"] = labels
        elif key == "targetlabel":
            info["regression"] = bool(words) and words[0].lower() == "true"
        elif key == "problemname":
            info["name"] = value.strip()
        elif key == "timestamps" and words and words[0].lower() == "true":
            raise FormatError(f"{where}: timestamped .ts files are not supported.")
        elif key == "dimensions":
            # isdigit() alone admits '²', which int() rejects: ASCII digits only.
            digits = words[0] if len(words) == 1 and words[0].isascii() else ""
            if not digits.isdigit() or int(digits) < 1:
                raise FormatError(f"{where} line {number}: @dimensions needs a positive integer.")
            info["dims"] = int(words[0])
        elif key == "univariate" and words and words[0].lower() == "true":
            info["dims"] = info["dims"] or 1
    raise FormatError(f"{where}: no @data line; not a .ts file.")


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _values(part: str, where: str) -> list[float]:
    out = []
    for token in part.split(","):
        token = token.strip()
        if token == "?":
            out.append(math.nan)
            continue
        try:
            value = float(token)
        except ValueError:
            raise FormatError(f"{where}: {token[:30]!r} is not a number or '?'.") from None
        if math.isinf(value):
            raise FormatError(f"{where}: infinite value {token!r}.")
        if abs(value) > _FLOAT32_MAX:  # would become inf in the float32 array
            raise FormatError(f"{where}: {token[:30]!r} is outside the float32 range.")
        out.append(value)
    return out


def _target(label: str, where: str) -> float:
    try:
        value = float(label)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise FormatError(f"{where}: target {label[:30]!r} is not a finite number.")
    return value


def parse_ts(text: str, *, source: str = ".ts data") -> TsData:
    """Parses the text of a ``.ts`` file.

    Args:
      text: the file's content.
      source: name used in error messages.

    Returns:
      A `TsData`, series zero-padded to the longest.

    Raises:
      FormatError: missing ``@data``, unknown class label, wrong number of
        dimensions, values that are not numbers, no series.

    Example:
      Two dimensions per step (``:``-separated) and a regression target:

      >>> from jaxnets.data import parse_ts
      >>> ts = parse_ts("@targetLabel true\\n@data\\n1,2:3,4:0.5\\n5,6:7,8:-1.5\\n")
      >>> ts.x.shape, ts.x[0].tolist(), ts.y.tolist(), ts.class_names
      ((2, 2, 2), [[1.0, 3.0], [2.0, 4.0]], [0.5, -1.5], None)
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_ts expects str, got {type(text).__name__}; use read_ts for bytes.")
    lines = (
        (number, line.strip())
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and line.strip()[0] not in "#%"
    )
    info, _ = _header(lines, source)
    classes, regression = info["classes"], info["regression"]
    if classes is not None and regression:
        raise FormatError(f"{source}: both @classLabel true and @targetLabel true.")
    labelled = classes is not None or regression
    series, labels, dims = [], [], info["dims"]
    for number, line in lines:
        where = f"{source} line {number}"
        parts = line.split(":")
        if labelled:
            if len(parts) < 2:
                raise FormatError(f"{where}: expected 'values:...:label'.")
            label = parts.pop().strip()
            if regression:
                labels.append(_target(label, where))
            elif label not in classes:
                raise FormatError(
                    f"{where}: class {label[:30]!r} is not in @classLabel {' '.join(classes)}."
                )
            else:
                labels.append(classes.index(label))
        if dims is None:
            dims = len(parts)
        if len(parts) != dims:
            raise FormatError(f"{where}: {len(parts)} dimensions, expected {dims}.")
        series.append([_values(part, where) for part in parts])
    if not series:
        raise FormatError(f"{source}: no series after @data.")
    lengths = np.array([max(len(d) for d in s) for s in series], dtype=np.int64)
    t_max = int(lengths.max())
    if len(series) * t_max * dims > MAX_ELEMENTS:
        raise FormatError(f"{source}: {len(series)} x {t_max} x {dims} padded values is too many.")
    x = np.full((len(series), t_max, dims), np.nan, dtype=np.float32)
    for i, s in enumerate(series):
        for d, values in enumerate(s):
            x[i, : len(values), d] = values
    mask = ~np.isnan(x).any(axis=-1)
    y = None
    if labelled:
        y = np.asarray(labels, np.float32 if regression else np.int32)
    return TsData(
        np.nan_to_num(x, nan=0.0), mask, y, classes, lengths.astype(np.int32), info.get("name")
    )


def read_ts(source: str | os.PathLike | bytes) -> TsData:
    """Reads a ``.ts`` file from a path or from its bytes (UTF-8).

    Args:
      source: a file path, or the file's bytes (e.g. a zip member).

    Returns:
      A `TsData` (see `parse_ts`).

    Example:
      >>> import tempfile
      >>> from pathlib import Path
      >>> from jaxnets.data import read_ts
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     path = Path(tmp) / "Toy_TRAIN.ts"
      ...     _ = path.write_text("@classLabel true up down\\n@data\\n1,2,3:up\\n3,2,1:down\\n")
      ...     ts = read_ts(path)
      >>> ts.x.shape, ts.y.tolist(), ts.class_names
      ((2, 3, 1), [0, 1], ('up', 'down'))
      >>> read_ts(b"@data\\n1,?,3\\n").mask.tolist()  # no labels: y is None
      [[True, False, True]]
    """
    if isinstance(source, str | os.PathLike):
        data, where = Path(source).read_bytes(), str(source)
    elif isinstance(source, bytes | bytearray):
        data, where = bytes(source), ".ts bytes"
    else:
        raise TypeError(f"read_ts expects a path or bytes, got {type(source).__name__}.")
    return parse_ts(data.decode("utf-8", errors="replace"), source=where)


def _read_split(problem: str, data_dir) -> tuple[TsData, TsData]:
    """``(train, test)`` of one problem, from a folder or from an sktime wheel."""
    for folder in candidate_dirs(data_dir, ("ucr",)):
        for base in (folder / problem, folder):
            train, test = base / f"{problem}_TRAIN.ts", base / f"{problem}_TEST.ts"
            if train.is_file() and test.is_file():
                return read_ts(train), read_ts(test)
    for wheel in find_wheels("sktime", data_dir, ("ucr",)):
        try:
            with zipfile.ZipFile(wheel) as zf:
                members = set(zf.namelist())
                train = f"{_WHEEL_DIR}/{problem}/{problem}_TRAIN.ts"
                test = f"{_WHEEL_DIR}/{problem}/{problem}_TEST.ts"
                if train in members and test in members:
                    return tuple(read_ts(zf.read(m)) for m in (train, test))
        except (zipfile.BadZipFile, OSError) as err:
            raise FormatError(f"{wheel}: not a readable wheel ({err}).") from err
    raise DatasetNotFoundError(
        f"UCR problem {problem!r} not found: looked for {problem}_TRAIN.ts/_TEST.ts in "
        "$JAXNETS_DATA/ucr/<Name>/ and for an sktime wheel in $JAXNETS_DATA, $JAXNETS_DATA/ucr "
        f"and {cache_dir()}. Get the wheel with `pip download --no-deps sktime -d <dir>` and "
        "set JAXNETS_DATA=<dir> (or call jaxnets.data.ucr.fetch_sktime_wheel())."
    )


def _pad_steps(ts: TsData, steps: int) -> tuple[np.ndarray, np.ndarray]:
    extra = steps - ts.x.shape[1]
    return (
        np.pad(ts.x, ((0, 0), (0, extra), (0, 0))),
        np.pad(ts.mask, ((0, 0), (0, extra))),
    )


def load_ucr(problem: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Loads a UCR/UEA problem by its own name (e.g. ``"GunPoint"``).

    Train and test are padded to the same length; ``x_mask_train``/``x_mask_test``
    mark real steps.

    Args:
      problem: the problem's name, as in its files ``<problem>_TRAIN.ts``.
      data_dir: a folder holding ``<problem>/<problem>_{TRAIN,TEST}.ts`` (or the two
        files, or an sktime wheel); None searches ``$JAXNETS_DATA`` and `cache_dir()`.

    Returns:
      A `Dataset` of ``(n, steps, dims)`` float32 series.

    Raises:
      DatasetNotFoundError: the files are nowhere (the message says how to get them).
      FormatError: unreadable files, or train and test that do not match.

    Example:
      >>> import tempfile
      >>> from pathlib import Path
      >>> from jaxnets.data import load_ucr
      >>> head = "@classLabel true a b\\n@data\\n"
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     _ = (Path(tmp) / "Toy_TRAIN.ts").write_text(head + "1,2,3:a\\n3,2,1:b\\n")
      ...     _ = (Path(tmp) / "Toy_TEST.ts").write_text(head + "2,2:b\\n")
      ...     ds = load_ucr("Toy", data_dir=tmp)
      >>> ds
      Dataset('Toy', classification, train=2, test=1, input_shape=(3, 1), num_classes=2)
      >>> ds.x_mask_test.tolist()  # the test series is padded to the train length
      [[True, True, False]]
    """
    train, test = _read_split(problem, data_dir)
    if train.y is None or test.y is None or train.x.shape[2] != test.x.shape[2]:
        raise FormatError(f"{problem}: train and test need labels and the same dimensions.")
    if train.class_names != test.class_names:
        raise FormatError(f"{problem}: train and test declare different @classLabel lists.")
    steps = max(train.x.shape[1], test.x.shape[1])
    (x_train, m_train), (x_test, m_test) = _pad_steps(train, steps), _pad_steps(test, steps)
    classes = train.class_names
    return Dataset(
        x_train,
        train.y,
        x_test,
        test.y,
        num_classes=None if classes is None else len(classes),
        input_shape=x_train.shape[1:],
        task="regression" if classes is None else "classification",
        name=problem,
        class_names=classes,
        x_mask_train=m_train,
        x_mask_test=m_test,
    )


def _loader(problem: str):
    def load(data_dir: str | os.PathLike | None = None) -> Dataset:
        return load_ucr(problem, data_dir)

    load.__name__ = load.__qualname__ = problem
    load.__doc__ = f"UCR/UEA {problem} from sktime .ts files (see `jaxnets.data.ucr`)."
    return load


for _name, _problem in PROBLEMS.items():
    register(_name)(_loader(_problem))


def fetch_sktime_wheel(dest: str | os.PathLike | None = None, version: str | None = None) -> Path:
    """Downloads the sktime wheel (its bundled ``.ts`` files) with pip; for scripts.

    Runs ``python -m pip download --no-deps sktime -d dest``; nothing in jaxnets
    calls this on its own.

    Args:
      dest: target folder (default `cache_dir()`, which the loaders search).
      version: optional exact version.

    Returns:
      Path of the wheel.

    Raises:
      DatasetNotFoundError: pip failed (no network, unknown version...).

    Example:
      It is `jaxnets.data.wheels.fetch_wheel` for ``sktime`` (whose example shows
      the offline error); here the download is replaced by a stand-in:

      >>> from unittest import mock
      >>> from jaxnets.data import fetch_sktime_wheel
      >>> with mock.patch("jaxnets.data.ucr.fetch_wheel") as fetch:
      ...     _ = fetch_sktime_wheel("wheels", version="1.2.0")
      >>> fetch.call_args.args
      ('sktime', 'wheels', '1.2.0')
    """
    return fetch_wheel("sktime", dest, version)
