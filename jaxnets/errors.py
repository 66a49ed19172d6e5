"""Exceptions raised by jaxnets, and the helper that looks names up.

Every error subclasses the built-in exception a caller would expect
(``ValueError``, ``TypeError``, ``KeyError``...), so ``except ValueError``
keeps working, and says what was expected, what came, and how to fix the call.

Example:
  >>> from jaxnets.errors import lookup
  >>> lookup("adma", {"adam": 1, "sgd": 2}, kind="optimizer")
  Traceback (most recent call last):
  ...
  jaxnets.errors.UnknownNameError: unknown optimizer 'adma'; did you mean 'adam'? Valid optimizers: adam, sgd.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")


class JaxnetsError(Exception):
    """Base class of every error jaxnets raises on purpose."""


class UnknownNameError(JaxnetsError, KeyError):
    """A name (optimizer, loss, metric, model, dataset...) is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message.
        return str(self.args[0]) if self.args else ""


class ShapeError(JaxnetsError, ValueError):
    """An array does not have the shape or rank that was expected."""


class DTypeError(JaxnetsError, TypeError):
    """An array does not have the dtype that was expected."""


class DataError(JaxnetsError, ValueError):
    """Data is malformed: empty, mismatched lengths, labels out of range, NaN..."""


class ConfigError(JaxnetsError, ValueError):
    """A hyperparameter or option is invalid (negative learning rate, ...)."""


class DatasetNotFoundError(JaxnetsError, FileNotFoundError):
    """A dataset is not installed; the message says how to install it."""


class FormatError(JaxnetsError, ValueError):
    """A file (IDX, .ts, checkpoint metadata, model config) is malformed."""


class CheckpointError(JaxnetsError, ValueError):
    """A checkpoint is missing, corrupted, or does not fit the model."""


def suggest(name: str, valid: Iterable[str]) -> str:
    """Returns ``"; did you mean 'x'?"`` for the closest valid name, or ``""``.

    Example:
      >>> from jaxnets.errors import suggest
      >>> suggest("adma", ["adam", "sgd"])
      "; did you mean 'adam'?"
      >>> suggest("lbfgs", ["adam", "sgd"])
      ''
    """
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def lookup(name: str, table: Mapping[str, T], *, kind: str) -> T:
    """Returns ``table[name]`` (case-insensitive) or raises `UnknownNameError`.

    The error names the closest match and lists every valid name.

    Example:
      >>> from jaxnets.errors import lookup
      >>> lookup("SGD", {"adam": 1, "sgd": 2}, kind="optimizer")
      2
      >>> try:
      ...     lookup("rmsprop", {"adam": 1, "sgd": 2}, kind="optimizer")
      ... except KeyError as e:  # UnknownNameError is a KeyError
      ...     print(e)
      unknown optimizer 'rmsprop'. Valid optimizers: adam, sgd.
    """
    if not isinstance(name, str):
        raise TypeError(f"{kind} name must be a string, got {type(name).__name__}: {name!r}")
    key = name.lower()
    if key in table:
        return table[key]
    valid = sorted(table)
    plural = kind + ("es" if kind.endswith("s") else "s")
    raise UnknownNameError(
        f"unknown {kind} {name!r}{suggest(key, valid) or '.'} Valid {plural}: {', '.join(valid)}."
    )
