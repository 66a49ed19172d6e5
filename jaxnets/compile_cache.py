"""The persistent compilation cache: XLA executables kept on disk between runs.

Executables are written to ``~/.cache/jaxnets/xla`` (or
``$JAXNETS_COMPILE_CACHE``; set it to ``off`` to disable), so a second run of
the same program skips compilation. `fit` turns the cache on at its first call
(`ensure_default_cache`) unless `disable_cache` was called or JAX's own cache
folder is already set. `jaxnets.compile` re-exports these names.

Example:
  >>> from jaxnets.compile_cache import cache_dir, disable_cache, enable_cache
  >>> before = cache_dir()
  >>> disable_cache()
  >>> cache_dir() is None
  True
  >>> _ = enable_cache(before) if before else None  # as it was
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

ENV_VAR = "JAXNETS_COMPILE_CACHE"
_OFF = ("0", "off", "false", "no", "none", "")
_STATE = {"user_choice": None}  # None until enable_cache/disable_cache is called


def default_cache_dir() -> str | None:
    """``$JAXNETS_COMPILE_CACHE`` (None when it says ``off``), else ``~/.cache/jaxnets/xla``.

    Returns:
      The default cache folder as a ``str``, or None when the environment
      variable turns the cache off (``0``, ``off``, ``false``, ``no``, ``none`` or empty).

    Example:
      >>> import os
      >>> from pathlib import Path
      >>> from unittest import mock
      >>> from jaxnets.compile import default_cache_dir
      >>> with mock.patch.dict(os.environ, {"JAXNETS_COMPILE_CACHE": "off"}):
      ...     print(default_cache_dir())
      None
      >>> with mock.patch.dict(os.environ):
      ...     _ = os.environ.pop("JAXNETS_COMPILE_CACHE", None)
      ...     Path(default_cache_dir()).parts[-3:]
      ('.cache', 'jaxnets', 'xla')
    """
    env = os.environ.get(ENV_VAR)
    if env is not None:
        return None if env.strip().lower() in _OFF else env
    return str(Path.home() / ".cache" / "jaxnets" / "xla")


def enable_cache(path: str | os.PathLike | None = None, *, min_compile_time_s: float = 0.0) -> str:
    """Turns on JAX's persistent compilation cache in ``path`` and returns the folder.

    Args:
      path: the cache folder (created if needed); default `default_cache_dir`.
      min_compile_time_s: only programs that took at least this long to compile
        are written; the default 0 caches small programs too (JAX's own default
        is 1 s, which skips most CPU training steps).

    Returns:
      The cache folder in use, as a ``str``.

    Example:
      >>> import os, tempfile, jax, jax.numpy as jnp
      >>> from jaxnets.compile import cache_dir, disable_cache, enable_cache
      >>> before = cache_dir()
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     path = enable_cache(os.path.join(tmp, "xla"))  # the folder is created
      ...     _ = jax.jit(lambda v: v * 3.5 + 0.25)(jnp.arange(3.0))
      ...     print(cache_dir() == path, len(os.listdir(path)) > 0)
      ...     _ = enable_cache(before) if before else disable_cache()  # as it was
      True True
    """
    from jax._src import compilation_cache  # re-reads the folder on the next compile

    path = str(path or default_cache_dir() or Path.home() / ".cache" / "jaxnets" / "xla")
    Path(path).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # no size floor
    compilation_cache.reset_cache()
    _STATE["user_choice"] = path
    return path


def disable_cache() -> None:
    """Turns the persistent compilation cache off for this process.

    `fit` then no longer turns on the default cache (`ensure_default_cache`).

    Example:
      >>> from jaxnets.compile import cache_dir, disable_cache, enable_cache
      >>> before = cache_dir()
      >>> disable_cache()
      >>> print(cache_dir())
      None
      >>> _ = enable_cache(before) if before else None  # as it was
    """
    from jax._src import compilation_cache

    jax.config.update("jax_compilation_cache_dir", None)
    compilation_cache.reset_cache()
    _STATE["user_choice"] = False


def cache_dir() -> str | None:
    """The folder the persistent cache writes to now, or None when it is off.

    Returns:
      JAX's ``jax_compilation_cache_dir`` setting, or None when it is unset.

    Example:
      >>> import tempfile
      >>> from jaxnets.compile import cache_dir, disable_cache, enable_cache
      >>> before = cache_dir()
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     path = enable_cache(tmp)
      ...     print(cache_dir() == path)
      ...     disable_cache()
      ...     print(cache_dir())
      ...     _ = enable_cache(before) if before else None  # as it was
      True
      None
    """
    return jax.config.jax_compilation_cache_dir or None


def ensure_default_cache() -> str | None:
    """Enables the default cache once, unless the user chose (or JAX already has a folder).

    `fit` calls it; it returns the cache folder in use, or None when the cache is off.

    Returns:
      `cache_dir` after the check: the folder in use, or None.

    Example:
      >>> from jaxnets.compile import cache_dir, disable_cache, enable_cache, ensure_default_cache
      >>> before = cache_dir()
      >>> disable_cache()  # an explicit choice, which ensure_default_cache keeps
      >>> print(ensure_default_cache())
      None
      >>> _ = enable_cache(before) if before else None  # as it was
    """
    if _STATE["user_choice"] is None:
        if jax.config.jax_compilation_cache_dir or default_cache_dir() is None:
            _STATE["user_choice"] = jax.config.jax_compilation_cache_dir or False
        else:
            try:
                enable_cache()
            except OSError:  # e.g. a read-only home: run without the cache
                _STATE["user_choice"] = False
    return cache_dir()
