"""Jane Austen's six novels from the Debian package ``r-cran-janeaustenr``, read without R.

The package keeps each novel as an R character vector (one element per line)
in the lazy-load database ``data/Rdata.rdb`` + ``Rdata.rdx``; `jaxnets.data.rdata`
decodes it. ``load("austen")`` turns the concatenated novels (publication order)
into a character-level language-modelling dataset whose last 10% is the test split.

Folders searched, in order: ``data_dir=`` (the folder itself, its ``janeaustenr/data``
subfolder, or an extracted package tree under it); otherwise ``$JAXNETS_DATA`` the
same way, then the installed package (``/usr/lib/R/site-library/janeaustenr/data``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jaxnets.data.datasets import Dataset, candidate_dirs, register
from jaxnets.data.preprocessing import sequence_windows
from jaxnets.data.rdata import RObject, read_lazyload
from jaxnets.errors import ConfigError, DatasetNotFoundError, FormatError

# R object name -> title, in publication order.
NOVELS = {
    "sensesensibility": "Sense & Sensibility",
    "prideprejudice": "Pride & Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}
_PACKAGE_DATA = "usr/lib/R/site-library/janeaustenr/data"
SYSTEM_DIRS = (Path("/") / _PACKAGE_DATA, Path("/usr/local/lib/R/site-library/janeaustenr/data"))
INSTALL = (
    "Install the Debian package with `apt-get install -y r-cran-janeaustenr` (as root; it "
    "pulls in R), or without R: `apt-get download r-cran-janeaustenr && dpkg-deb -x "
    "r-cran-janeaustenr_*.deb <dir>` and set JAXNETS_DATA=<dir> (or pass data_dir=<dir>)."
)


def find_austen_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding ``Rdata.rdb`` and ``Rdata.rdx``, or `DatasetNotFoundError`."""
    subdirs = ("janeaustenr/data", _PACKAGE_DATA, f"janeaustenr/{_PACKAGE_DATA}")
    for folder in candidate_dirs(data_dir, subdirs, SYSTEM_DIRS):
        if (folder / "Rdata.rdb").is_file() and (folder / "Rdata.rdx").is_file():
            return folder
    raise DatasetNotFoundError(
        f"austen: janeaustenr's data/Rdata.rdb + Rdata.rdx not found. {INSTALL}"
    )


def load_austen_texts(data_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Each novel's text (lines joined by newlines), keyed by R name, in publication order.

    Args:
      data_dir: where the package files are (see the module docstring); None
        searches ``$JAXNETS_DATA`` and the installed Debian package.

    Returns:
      ``{"sensesensibility": text, "prideprejudice": text, ...}``, the six `NOVELS`.

    Raises:
      DatasetNotFoundError: the package files are missing (the message says how to install).
      FormatError: the files are not a readable lazy-load database of the six novels.

    Example:
      An explicit ``data_dir`` is the only folder searched, so an empty one fails
      with install instructions (with the package, ``texts["emma"]`` starts the novel):

      >>> import tempfile
      >>> from jaxnets.data import load_austen_texts
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     texts = load_austen_texts(data_dir=tmp)
      Traceback (most recent call last):
      ...
      jaxnets.errors.DatasetNotFoundError: austen: janeaustenr's data/Rdata.rdb + Rdata.rdx not found. Install ...
    """
    folder = find_austen_dir(data_dir)
    objects = read_lazyload(
        (folder / "Rdata.rdb").read_bytes(),
        (folder / "Rdata.rdx").read_bytes(),
        where=str(folder / "Rdata"),
    )
    return novels_from_objects(objects, str(folder))


def novels_from_objects(objects: dict, where: str = "Rdata") -> dict[str, str]:
    """Picks the six novels (character vectors) out of decoded lazy-load objects."""
    texts = {}
    for name in NOVELS:
        obj = objects.get(name)
        if not isinstance(obj, RObject) or obj.kind != "character":
            raise FormatError(
                f"{where}: expected novel {name!r} as an R character vector, found "
                f"{type(obj).__name__ if not isinstance(obj, RObject) else obj.kind}."
            )
        texts[name] = "\n".join("" if line is None else line for line in obj.value)
    return texts


def novels_text(data_dir, novels: tuple[str, ...] | None, test_fraction: float) -> str:
    """The chosen novels (default all six) in publication order, a blank line apart.

    Checks ``novels`` and ``test_fraction`` (strictly between 0 and 1) first.
    A novel named twice is refused: its second copy would put the training
    text into the test split. One name may be given as a plain string.
    """
    given = (novels,) if isinstance(novels, str) else tuple(NOVELS if novels is None else novels)
    unknown = [n for n in given if n not in NOVELS]
    if unknown or not given:
        raise ConfigError(f"novels must be among {', '.join(NOVELS)}; got {list(given)}.")
    repeated = sorted({n for n in given if given.count(n) > 1})
    if repeated:
        raise ConfigError(
            f"novels names {', '.join(repeated)} more than once; a repeated novel would put "
            "its training text into the test split. Name each novel once."
        )
    chosen = tuple(n for n in NOVELS if n in given)  # publication order, whatever the order given
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}.")
    texts = load_austen_texts(data_dir)
    return "\n\n".join(texts[n] for n in chosen)


@register("austen", "jane_austen")
def austen(
    data_dir: str | os.PathLike | None = None,
    seq_len: int | None = 128,
    test_fraction: float = 0.1,
    novels: tuple[str, ...] | None = None,
) -> Dataset:
    """Character-level language modelling on Jane Austen's novels.

    The novels (publication order, separated by a blank line) form one text;
    its vocabulary is the sorted set of characters (``class_names``), and the
    last ``test_fraction`` of the characters is the test split.

    Args:
      data_dir: where the package files are (see the module docstring).
      seq_len: cut each split into non-overlapping windows ``x`` ``(n, seq_len)``
        with next-character targets ``y``; None returns the whole token stream
        ``x`` ``(N,)`` with ``y[i] = x[i+1]``.
      test_fraction: share of the text held out at its end.
      novels: R names of a subset of novels (see `NOVELS`), each once, taken in
        publication order; default all six.
    """
    text = novels_text(data_dir, novels, test_fraction)
    vocab = sorted(set(text))
    lookup = np.zeros(max(map(ord, vocab)) + 1, dtype=np.int32)
    lookup[[ord(c) for c in vocab]] = np.arange(len(vocab), dtype=np.int32)
    tokens = lookup[np.frombuffer(text.encode("utf-32-le"), dtype="<u4")]
    cut = int(len(tokens) * (1.0 - test_fraction))
    train, test = tokens[:cut], tokens[cut:]
    if seq_len is None:
        splits = (train[:-1], train[1:], test[:-1], test[1:])
    else:
        splits = (*sequence_windows(train, seq_len), *sequence_windows(test, seq_len))
    return Dataset(
        *splits,
        num_classes=len(vocab),
        input_shape=splits[0].shape[1:],
        task="language_modeling",
        name="austen",
        class_names=tuple(vocab),
        vocab_size=len(vocab),  # the inputs' vocabulary too: Embedding(ds.vocab_size, ...)
    )
