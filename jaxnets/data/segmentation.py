"""Word segmentation of Jane Austen's novels: a label for every character.

``load("austen_segmentation")`` removes the whitespace from the novels (read by
`jaxnets.data.austen`) and asks, for every remaining character, whether it
begins a word, i.e. whether whitespace stood right before it in the original
text. Inputs are int character tokens ``(n, seq_len)``, targets the 0/1 labels
``(n, seq_len)`` of the same steps (task ``"tagging"``), so a sequence tagger
(``gru_tagger``) learns where the spaces went.

The label marks a word's first character rather than its last because taggers
read left to right: a boundary after "the" in "thehouse" is only visible once
the "h" of "house" has been read, so "begins a word" is decidable from the
characters a causal tagger has seen and "ends a word" is not. About one
character in five begins a word; always answering "no" is the baseline to beat.

Example:
  >>> tokens, labels, vocab = segment_text("It is a truth\\nuniversally")
  >>> "".join(vocab[t] for t in tokens), labels.tolist()[:9]
  ('Itisatruthuniversally', [1, 0, 1, 0, 1, 1, 0, 0, 0])
"""

from __future__ import annotations

import os

import numpy as np

from jaxnets.data.austen import novels_text
from jaxnets.data.datasets import Dataset, register
from jaxnets.errors import ConfigError


def segment_text(text: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """``(tokens, begins_word, vocabulary)`` of ``text`` with its whitespace removed.

    ``tokens[i]`` indexes ``vocabulary`` (the sorted non-whitespace characters);
    ``begins_word[i]`` is 1 where whitespace (or the start of the text) came
    right before that character in ``text``.
    """
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    spaces = np.array(sorted(ord(c) for c in set(text) if c.isspace()), dtype=np.uint32)
    is_space = np.isin(codes, spaces)
    after_space = np.concatenate([[True], is_space[:-1]])  # the text's start counts as a space
    kept = codes[~is_space]
    vocab = tuple(sorted(chr(c) for c in np.unique(kept)))
    lookup = np.zeros(max(map(ord, vocab), default=0) + 1, dtype=np.int32)
    lookup[[ord(c) for c in vocab]] = np.arange(len(vocab), dtype=np.int32)
    return lookup[kept], after_space[~is_space].astype(np.int32), vocab


def _windows(values: np.ndarray, seq_len: int) -> np.ndarray:
    """Non-overlapping ``(n, seq_len)`` windows; a shorter tail is dropped."""
    count = len(values) // seq_len
    return values[: count * seq_len].reshape(count, seq_len)


@register("austen_segmentation")
def austen_segmentation(
    data_dir: str | os.PathLike | None = None,
    seq_len: int = 64,
    test_fraction: float = 0.1,
    novels: tuple[str, ...] | None = None,
) -> Dataset:
    """Which character begins a word, in Austen's novels with the whitespace removed.

    Args:
      data_dir: where the ``r-cran-janeaustenr`` files are (see `jaxnets.data.austen`).
      seq_len: characters per example (non-overlapping windows).
      test_fraction: share of the characters held out at the end of the text.
      novels: R names of a subset of novels (see `jaxnets.data.austen.NOVELS`),
        each once, taken in publication order; default all six (3.3 M characters).

    Returns:
      A ``"tagging"`` `Dataset`: ``x`` int32 tokens and ``y`` int32 labels, both
      ``(n, seq_len)``; ``num_classes=2``; ``vocab_size`` characters.
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ConfigError(f"seq_len must be a positive int, got {seq_len!r}.")
    tokens, labels, vocab = segment_text(novels_text(data_dir, novels, test_fraction))
    cut = int(len(tokens) * (1.0 - test_fraction))
    x_train, x_test = _windows(tokens[:cut], seq_len), _windows(tokens[cut:], seq_len)
    y_train, y_test = _windows(labels[:cut], seq_len), _windows(labels[cut:], seq_len)
    return Dataset(
        x_train,
        y_train,
        x_test,
        y_test,
        num_classes=2,
        input_shape=(seq_len,),
        task="tagging",
        name="austen_segmentation",
        class_names=("inside", "begins word"),
        vocab_size=len(vocab),
    )
