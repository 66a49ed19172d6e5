"""Hyperparameter search where each generation of trials trains as one population.

`search` draws trials (random search, or every point of a grid) over
hyperparameters held as arrays in the training state: the optimizer's
``learning_rate`` and ``weight_decay`` and the model's ``dropout_rate``. It runs
them ``population`` at a time with `jaxnets.population.fit_population` (one
vmapped, compiled epoch per generation), and returns a `Results` table sorted
best first.

A search space maps a hyperparameter to a list of values (grid points or random
choices) or to a `LogUniform` / `Uniform` range (random search only).

Example:
  >>> import numpy as np, flax.linen as nn
  >>> from jaxnets.training import create_train_state
  >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
  >>> y = (x[:, 0] > 0).astype(np.int32)
  >>> make = lambda seed: create_train_state(nn.Dense(2), "adam", x[:1], seed=seed)
  >>> results = search(make, (x, y), {"learning_rate": [1e-3, 1e-1]}, method="grid",
  ...                  epochs=2, batch_size=16, verbose=0)
  >>> [round(r["learning_rate"], 3) for r in results]
  [0.1, 0.001]
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping

import numpy as np

from jaxnets.errors import ConfigError
from jaxnets.population import _mode, fit_population


@dataclasses.dataclass(frozen=True)
class Uniform:
    """Values drawn uniformly from ``[low, high]``.

    Attributes:
      low: the smallest value.
      high: the largest value.

    Example:
      >>> import numpy as np
      >>> from jaxnets.tune import Uniform
      >>> rng = np.random.default_rng(0)
      >>> all(0.1 <= Uniform(0.1, 0.5).sample(rng) <= 0.5 for _ in range(100))
      True
    """

    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))


@dataclasses.dataclass(frozen=True)
class LogUniform:
    """Values whose logarithm is uniform on ``[log low, log high]`` (learning rates).

    Attributes:
      low: the smallest value, > 0.
      high: the largest value, >= ``low`` (checked when sampling).

    Example:
      >>> import numpy as np
      >>> from jaxnets.tune import LogUniform
      >>> rng = np.random.default_rng(0)
      >>> draws = [LogUniform(1e-4, 1e-1).sample(rng) for _ in range(1000)]
      >>> min(draws) >= 1e-4, max(draws) <= 1e-1, sum(d < 1e-2 for d in draws) > 600  # ~2/3
      (True, True, True)
    """

    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        if not 0 < self.low <= self.high:
            raise ConfigError(f"LogUniform needs 0 < low <= high, got {self.low}, {self.high}.")
        return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))


class Results(list):
    """Trials as dicts, best first; ``str()`` (or `show`) prints them as a table.

    Args:
      rows: the trial dicts (hyperparameters, seed, final metrics, epochs run),
        already in order, best first (`search` sorts them; this class does not).
      metric: the name of the metric that ranked the trials (``.metric``).
      best_state: the winning trial's `TrainState` (``.best_state``), or None.

    Example:
      >>> from jaxnets.tune import Results
      >>> results = Results([{"trial": 1, "learning_rate": 0.01, "loss": 0.25},
      ...                    {"trial": 0, "learning_rate": 0.1, "loss": 0.5}], metric="loss")
      >>> results.best["trial"]
      1
      >>> results.show()
      trial  learning_rate  loss
      -----  -------------  ----
          1           0.01  0.25
          0            0.1   0.5
    """

    def __init__(self, rows, metric: str, best_state=None):
        super().__init__(rows)
        self.metric = metric
        self.best_state = best_state  # the winning member as a TrainState

    @property
    def best(self) -> dict:
        return self[0]

    def __str__(self) -> str:
        if not self:
            return "(no trials)"
        cols = list(dict.fromkeys(k for row in self for k in row))
        fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
        cells = [[fmt(row.get(c, "")) for c in cols] for row in self]
        widths = [max(len(c), *(len(r[j]) for r in cells)) for j, c in enumerate(cols)]
        line = lambda items: "  ".join(s.rjust(w) for s, w in zip(items, widths, strict=True))
        return "\n".join([line(cols), line(["-" * w for w in widths]), *map(line, cells)])

    def show(self) -> None:
        print(self)


def trials(space: Mapping, method: str = "random", n: int = 8, seed: int = 0) -> list[dict]:
    """The hyperparameter settings a search runs.

    Args:
      space: hyperparameter name -> list (or tuple) of values, `Uniform` or
        `LogUniform` (ranges are for random search only).
      method: ``"random"`` (``n`` independent draws: a list is sampled as a
        uniform choice, returned as a float) or ``"grid"`` (every combination
        of the lists, the last name varying fastest).
      n: the number of random draws; ignored by grid search.
      seed: the seed of ``np.random.default_rng`` for the random draws.

    Returns:
      A list of ``{name: value}`` dicts, one per trial.

    Example:
      >>> trials({"learning_rate": [0.1, 0.01], "weight_decay": [0.0, 1e-4]}, "grid")[1]
      {'learning_rate': 0.1, 'weight_decay': 0.0001}
    """
    if not space:
        raise ConfigError(
            "the search space is empty; e.g. {'learning_rate': LogUniform(1e-4, 1e-1)}."
        )
    if method == "grid":
        bad = [k for k, v in space.items() if not isinstance(v, (list, tuple))]
        if bad:
            raise ConfigError(f"grid search needs lists of values; {bad} are ranges.")
        return [
            dict(zip(space, combo, strict=True)) for combo in itertools.product(*space.values())
        ]
    if method != "random":
        raise ConfigError(f"method must be 'random' or 'grid', got {method!r}.")
    rng = np.random.default_rng(seed)
    draw = lambda v: v.sample(rng) if hasattr(v, "sample") else float(rng.choice(list(v)))
    return [{k: draw(v) for k, v in space.items()} for _ in range(n)]


def search(
    make_state: Callable,
    data,
    space: Mapping,
    *,
    method: str = "random",
    n_trials: int = 8,
    population: int = 16,
    epochs: int = 1,
    batch_size: int = 32,
    validation_data=None,
    metric: str | None = None,
    mode: str | None = None,
    patience: int | None = None,
    seed: int = 0,
    verbose: int = 1,
    allow_nonfinite: bool = False,
) -> Results:
    """Random or grid search, each generation of ``population`` trials as one population.

    Args:
      make_state: ``make_state(seed) -> TrainState`` (see `fit_population`).
      data, validation_data, epochs, batch_size, patience: as in `fit_population`.
      space: hyperparameter name -> list of values, `Uniform` or `LogUniform`.
      method: ``"random"`` (``n_trials`` draws) or ``"grid"`` (every combination).
      population: trials trained at once.
      metric, mode: what ranks the trials (default ``val_loss`` or ``loss``,
        lowest first). ``mode`` None takes the direction from the name, as the
        callbacks' ``mode='auto'``: losses and errors (``mse``, ``val_mae``...)
        rank lowest first, accuracies and AUC highest first; other names need
        ``mode='min'`` or ``'max'``.
      seed: seeds the draws; trial ``t`` trains with seed ``seed + t``.
      n_trials: the number of random draws with ``method="random"``; grid search
        runs every combination instead.
      verbose: 0 silent; 1 one line per generation; 2 also `fit_population`'s
        output for each generation (its ``verbose`` is ``verbose - 1``).
      allow_nonfinite: let NaN/Inf inputs through, as in `fit_population`.

    With ``patience``, each trial stops early when ``metric`` (the quantity that
    ranks the trials) stops improving, by Keras's rules for its name.

    Returns:
      `Results`: one dict per trial (hyperparameters, seed, final metrics,
      epochs run), best first, with the best member in ``results.best_state``.

    Example:
      >>> import numpy as np, flax.linen as nn
      >>> from jaxnets.training import create_train_state
      >>> from jaxnets.tune import LogUniform, search
      >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
      >>> y = (x[:, 0] > 0).astype(np.int32)
      >>> make = lambda seed: create_train_state(nn.Dense(2), "adam", x[:1], seed=seed)
      >>> results = search(make, (x, y), {"learning_rate": LogUniform(1e-3, 1e-1)},
      ...                  n_trials=3, population=3, epochs=1, batch_size=16, verbose=0)
      >>> len(results), list(results.best), results.metric
      (3, ['trial', 'learning_rate', 'seed', 'accuracy', 'loss', 'epochs'], 'loss')
      >>> results.best_state.params["kernel"].shape
      (3, 2)
    """
    configs = trials(space, method, n_trials, seed)
    rows, best_state, best_score = [], None, None
    for start in range(0, len(configs), population):
        group = configs[start : start + population]
        seeds = [seed + start + j for j in range(len(group))]
        hp = {k: [c[k] for c in group] for k in group[0]}
        pop = fit_population(
            make_state, data, seeds=seeds, hparams=hp, epochs=epochs, batch_size=batch_size,
            validation_data=validation_data, patience=patience, monitor=metric,
            mode=mode or "auto", verbose=max(0, verbose - 1), allow_nonfinite=allow_nonfinite,
        )  # fmt: skip
        metric = metric or pop.monitor
        mode = _mode(metric, mode)
        for j, row in enumerate(pop.table()):
            rows.append({"trial": start + j, **{k: row.pop(k) for k in group[0]}, **row})
            del rows[-1]["member"]
        i = pop.best_index(metric, mode)
        score = pop.scores(metric)[i] * (1 if mode == "min" else -1)
        if best_score is None or score < best_score:
            best_state, best_score = pop.member(i), score
        if verbose:
            print(f"generation {start // population + 1}: {len(group)} trials, best {metric} "
                  f"{pop.scores(metric)[i]:.4f}")  # fmt: skip
    sign = 1.0 if mode == "min" else -1.0
    finite = lambda v: isinstance(v, float) and math.isfinite(v)
    rows.sort(key=lambda r: sign * r[metric] if finite(r.get(metric)) else math.inf)
    return Results(rows, metric, best_state)
