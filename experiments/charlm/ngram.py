"""Interpolated Kneser-Ney character n-gram model, vectorized with numpy.

Chen & Goodman 1998 ("An empirical study of smoothing techniques for language
modeling"), interpolated KN with one absolute discount per order,
``D = n1 / (n1 + 2 n2)``. The highest order uses raw counts, lower orders use
continuation counts (the number of distinct characters seen before an n-gram),
and the unigram level is interpolated with the uniform distribution, so every
character of the vocabulary has a nonzero probability.

Example:
  >>> import numpy as np
  >>> tokens = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1], np.int64)
  >>> model = KneserNey(tokens, order=3, vocab_size=4)
  >>> probs = model.probabilities(tokens, 2)   # distribution over the next character
  >>> bool(abs(probs.sum() - 1) < 1e-9), int(probs.argmax())
  (True, 2)
"""

from __future__ import annotations

import numpy as np


def _keys(tokens: np.ndarray, k: int, base: int) -> np.ndarray:
    """Integer code of the k-gram ending at each position ``i >= k - 1``."""
    out = np.zeros(len(tokens) - k + 1, np.int64)
    for j in range(k):
        out = out * base + tokens[j : len(tokens) - k + 1 + j]
    return out


def _discount(counts: np.ndarray) -> float:
    n1, n2 = np.sum(counts == 1), np.sum(counts == 2)
    return float(n1 / (n1 + 2 * n2)) if n1 + n2 else 0.5


class _Level:
    """Counts of one order: per n-gram (numerator) and per context (denominator, types)."""

    def __init__(self, grams: np.ndarray, counts: np.ndarray, base: int):
        self.grams, self.counts = grams, counts  # sorted unique n-gram codes
        self.discount = _discount(counts)
        ctx, first = np.unique(grams // base, return_index=True)
        self.contexts = ctx
        self.context_total = np.add.reduceat(counts, first).astype(np.float64)
        self.context_types = np.diff(np.append(first, len(grams))).astype(np.float64)


def _find(sorted_keys: np.ndarray, values, queries: np.ndarray, default=0.0):
    pos = np.clip(np.searchsorted(sorted_keys, queries), 0, len(sorted_keys) - 1)
    hit = sorted_keys[pos] == queries
    return np.where(hit, values[pos], default), hit


class KneserNey:
    """An interpolated Kneser-Ney model of ``order`` over int tokens in ``[0, vocab_size)``."""

    def __init__(self, tokens: np.ndarray, order: int = 5, vocab_size: int | None = None):
        tokens = np.asarray(tokens, np.int64)
        self.order = order
        self.base = int(vocab_size or tokens.max() + 1)
        self.levels = []
        top_grams, top_counts = np.unique(_keys(tokens, order, self.base), return_counts=True)
        for k in range(1, order + 1):
            if k == order:
                grams, counts = top_grams, top_counts
            else:
                # Continuation count: distinct left neighbours of each k-gram.
                longer = np.unique(_keys(tokens, k + 1, self.base))
                grams, counts = np.unique(longer % self.base**k, return_counts=True)
            self.levels.append(_Level(grams, counts, self.base))

    def _prob(self, history: np.ndarray, target: np.ndarray) -> np.ndarray:
        """P(target | the order-1 tokens before it); ``history`` ``(M, order-1)``."""
        p = np.full(len(target), 1.0 / self.base)
        for k, level in enumerate(self.levels, start=1):
            ctx = np.zeros(len(target), np.int64)
            for j in range(self.order - k, self.order - 1):
                ctx = ctx * self.base + history[:, j]
            count, _ = _find(level.grams, level.counts, ctx * self.base + target)
            total, seen = _find(level.contexts, level.context_total, ctx, 1.0)
            types, _ = _find(level.contexts, level.context_types, ctx)
            d = level.discount
            mixed = np.maximum(count - d, 0) / total + d * types / total * p
            p = np.where(seen, mixed, p)  # unseen context: keep the lower-order estimate
        return p

    def probabilities(self, tokens: np.ndarray, position: int) -> np.ndarray:
        """The distribution over the token at ``position`` given the tokens before it."""
        history = np.asarray(tokens[position - self.order + 1 : position], np.int64)
        hist = np.repeat(history[None], self.base, axis=0)
        return self._prob(hist, np.arange(self.base))

    def nll(self, tokens: np.ndarray, start: int, chunk: int = 200_000) -> float:
        """Mean negative log-likelihood (nats) of ``tokens[start:]`` given all tokens before."""
        tokens = np.asarray(tokens, np.int64)
        if start < self.order - 1:
            raise ValueError(f"start must be >= order - 1 = {self.order - 1}")
        total = 0.0
        for lo in range(start, len(tokens), chunk):
            idx = np.arange(lo, min(lo + chunk, len(tokens)))
            # (M, order - 1) preceding tokens; (M, 0) for a unigram model, which has none.
            history = tokens[idx[:, None] + np.arange(1 - self.order, 0)]
            total -= np.log(self._prob(history, tokens[idx])).sum()
        return total / (len(tokens) - start)
