"""Populations: N models trained at once, vmapped over params, optimizer state and keys.

`fit_population` builds (or takes) N `TrainState` members that share an
architecture and optimizer, gives each its own seed (initialization, dropout
keys and batch order) and its own hyperparameters, held as arrays in its state
(learning rate, weight decay: `jaxnets.optim.set_hyperparam` on the optimizer
state; dropout rate: `jaxnets.training.state.set_model_hyperparam`, which every
`jaxnets.layers.Dropout` of the model reads), stacks them, and trains them together: each epoch is one compiled
``vmap`` of the fused epoch of `jaxnets.training.fused`. Member ``i`` takes
exactly the steps ``fit(member_i, data, seed=seeds[i])`` would take. This module
drives the run; the stacking is `jaxnets.population_members` and the compiled
epoch and evaluation are `jaxnets.population_programs`.
On the CPU the epoch's batched weight gradients are rewritten to run in
YNNPACK (`jaxnets.cpu_batched_dots`), which changes their order of summation:
members equal their solo fits to float32 rounding, not bit for bit.

Each member has its own metrics and its own early stopping (Keras rules on the
monitored quantity); a stopped member's state stops changing while the others
go on. ``Population.best()`` returns the winner as an ordinary `TrainState`.

A per-member dropout rate needs jaxnets' `Dropout` layer (the zoo models use
it when built with ``dropout_rate > 0``): ``flax.linen.Dropout``'s rate is a
static field, and a model with no layer that reads a given rate is an error.

Example:
  >>> import numpy as np, flax.linen as nn
  >>> from jaxnets.training import create_train_state
  >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
  >>> y = (x[:, 0] > 0).astype(np.int32)
  >>> make = lambda seed: create_train_state(nn.Dense(2), "adam", x[:1], seed=seed)
  >>> pop = fit_population(make, (x, y), n=3, hparams={"learning_rate": [1e-3, 1e-2, 1e-1]},
  ...                      epochs=3, batch_size=16, verbose=0)
  >>> len(pop), pop.hparams[pop.best_index()]["learning_rate"]
  (3, 0.1)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets import compile as compile_lib
from jaxnets import metrics as metrics_lib
from jaxnets import optim, validation
from jaxnets.callbacks import monitor as monitor_lib
from jaxnets.data.batching import padding_row
from jaxnets.errors import ConfigError
from jaxnets.layers import hyperparams
from jaxnets.population_members import stack_states, unstack_member
from jaxnets.population_programs import (
    _population_epoch_cpu,
    population_epoch,
    population_eval,
)
from jaxnets.training import fused
from jaxnets.training.engine import LocalEngine, default_engine
from jaxnets.training.inputs import as_arrays
from jaxnets.training.state import TrainState, set_model_hyperparam


def _mode(metric: str, mode: str | None = None) -> str:
    """``'min'`` or ``'max'`` for ``metric``: ``mode`` if given, else by name.

    The callbacks' rule (`jaxnets.callbacks.monitor.resolve_mode`), so that
    ranking, per-member early stopping and `EarlyStopping` agree: losses and
    errors (``mse``, ``val_mae``...) go down, accuracies and AUC go up; another
    name needs an explicit mode.
    """
    return monitor_lib.resolve_mode(metric, mode or "auto", who="population")


@dataclasses.dataclass
class Population:
    """The result of `fit_population`: stacked states plus each member's record.

    Attributes:
      states: the members' states stacked by `stack_states` (leaves
        ``(N, ...)``); `member` unstacks one.
      histories: one dict per member, ``{metric: [value per epoch run]}`` (with
        ``val_*`` entries given validation data); a stopped member's ends early.
      seeds: each member's seed (initialization and shuffle order).
      hparams: each member's hyperparameters, ``{name: float}`` (empty dicts
        when none were given).
      stopped_epoch: per member, the 0-based epoch after which early stopping
        stopped it, or None if it trained every epoch.
      monitor: the metric early stopping watched, and the default of `scores`
        and `best`.
      mode: ``'min'``, ``'max'`` or ``'auto'`` (by the name, as the callbacks
        do): the direction of ``monitor`` when `best` ranks by it.

    Example:
      >>> import numpy as np, flax.linen as nn
      >>> from jaxnets.population import fit_population
      >>> from jaxnets.training import create_train_state
      >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
      >>> y = (x[:, 0] > 0).astype(np.int32)
      >>> make = lambda seed: create_train_state(nn.Dense(2), "adam", x[:1], seed=seed)
      >>> pop = fit_population(make, (x, y), n=3, hparams={"weight_decay": [0.0, 1e-4, 1e-3]},
      ...                      epochs=1, batch_size=16, verbose=0)
      >>> list(pop.table()[0])
      ['member', 'seed', 'weight_decay', 'accuracy', 'loss', 'epochs']
      >>> len(pop), pop.monitor, pop.member(2).params["kernel"].shape, pop.scores().shape
      (3, 'loss', (3, 2), (3,))
    """

    states: TrainState
    histories: list[dict]
    seeds: list[int]
    hparams: list[dict]
    stopped_epoch: list[int | None]
    monitor: str
    mode: str = "auto"

    def __len__(self) -> int:
        return len(self.seeds)

    def member(self, i: int) -> TrainState:
        """Member ``i`` as an ordinary `TrainState`."""
        return unstack_member(self.states, i)

    def scores(self, metric: str | None = None) -> np.ndarray:
        """Each member's last logged ``metric`` (default: the monitored quantity)."""
        metric = metric or self.monitor
        return np.array([h.get(metric, [np.nan])[-1] for h in self.histories], np.float64)

    def best_index(self, metric: str | None = None, mode: str | None = None) -> int:
        """The index of the winning member by its last ``metric`` (default: ``monitor``).

        ``mode`` (``'min'``/``'max'``) defaults to the direction of the name,
        as in the callbacks: ``loss``, ``mse``, ``val_mae``... lowest wins;
        ``accuracy``, ``auc``... highest wins.

        Example:
          >>> import numpy as np
          >>> pop = Population(None, [{"mse": [0.5, 0.2]}, {"mse": [0.3, 0.1]}], [0, 1],
          ...                  [{}, {}], [None, None], "mse")
          >>> pop.best_index(), pop.best_index(mode="max")
          (1, 0)
        """
        metric = metric or self.monitor
        if mode is None and metric == self.monitor:
            mode = self.mode
        scores = self.scores(metric)
        if np.all(np.isnan(scores)):
            raise ConfigError(f"no member logged {metric!r}; logged: {sorted(self.histories[0])}.")
        sign = 1.0 if _mode(metric, mode) == "min" else -1.0
        return int(np.nanargmin(sign * scores))

    def best(self, metric: str | None = None, mode: str | None = None) -> TrainState:
        """The winning member (lowest loss or error / highest accuracy...) as a `TrainState`."""
        return self.member(self.best_index(metric, mode))

    def table(self) -> list[dict]:
        """One dict per member: seed, hyperparameters, last logged metrics, epochs run."""
        rows = []
        for i, h in enumerate(self.histories):
            last = {k: v[-1] for k, v in h.items() if v and isinstance(v[-1], float)}
            rows.append({"member": i, "seed": self.seeds[i], **self.hparams[i], **last,
                         "epochs": len(h.get("loss", []))})  # fmt: skip
        return rows


def _check_monitor_logged(monitor: str, patience, zeros: dict, has_validation: bool) -> None:
    """`ConfigError` before training if early stopping watches a name no epoch logs.

    The logs hold the metric sums' names (and ``val_`` ones with validation
    data); an unlogged ``monitor`` (``"acc"`` for ``"accuracy"``, ``val_loss``
    without validation data) would never stop a member, silently.
    """
    if patience is None:
        return
    logged = sorted(zeros) + (sorted(f"val_{k}" for k in zeros) if has_validation else [])
    if monitor not in logged:
        raise ConfigError(
            f"early stopping monitors {monitor!r}, which no epoch logs; logged: {logged}."
        )


def _hparams_length(hparams: Mapping | None) -> int:
    """The member count that ``hparams``' per-member lists give (0 without lists)."""
    lists = [v for v in (hparams or {}).values() if isinstance(v, (list, tuple, np.ndarray))]
    return max((len(v) for v in lists), default=0)


def _member_hparams(hparams: Mapping | None, n: int) -> list[dict]:
    rows = [{} for _ in range(n)]
    for name, values in (hparams or {}).items():
        values = list(values) if isinstance(values, (list, tuple, np.ndarray)) else [values] * n
        if len(values) != n:
            raise ConfigError(f"hparams[{name!r}] has {len(values)} values for {n} members.")
        for row, v in zip(rows, values, strict=True):
            row[name] = float(v)
    return rows


def fit_population(
    make_state: Callable[[int], TrainState] | Sequence[TrainState],
    data,
    *,
    n: int | None = None,
    seeds: Sequence[int] | None = None,
    hparams: Mapping[str, Sequence[float] | float] | None = None,
    epochs: int = 1,
    batch_size: int = 32,
    validation_data=None,
    shuffle: bool = True,
    patience: int | None = None,
    min_delta: float = 0.0,
    monitor: str | None = None,
    mode: str = "auto",
    verbose: int = 1,
    engine=None,
    allow_nonfinite: bool = False,
) -> Population:
    """Trains N members at once; member ``i`` equals ``fit(member_i, data, seed=seeds[i])``.

    Args:
      make_state: ``make_state(seed) -> TrainState``, or the member states.
      data: training data as for `jaxnets.training.fit`.
      n: number of members (default: ``len(seeds)``, the number of states, or the
        length of ``hparams``' per-member lists).
      seeds: one per member (default ``0..n-1``): passed to ``make_state`` and
        used as the member's shuffle seed.
      hparams: per-member hyperparameters, e.g. ``{"learning_rate": [1e-3,
        3e-3], "weight_decay": 1e-4, "dropout_rate": [0.1, 0.4]}`` (a list
        gives one value per member, a number is shared): optimizer ones are
        injected into the optimizer state, ``dropout_rate`` into the model.
      epochs, batch_size, shuffle: as in `fit`.
      validation_data: evaluated for every member at each epoch end.
      patience, min_delta, monitor: per-member early stopping with Keras's
        rules on ``monitor`` (default ``val_loss``, or ``loss`` without
        validation data); None trains every member for ``epochs`` epochs.
      mode: ``'auto'`` (the direction from the name, as `EarlyStopping`:
        losses and errors such as ``val_mse`` go down, accuracies go up),
        ``'min'`` or ``'max'``: the direction of ``monitor``.
      verbose: 0 silent, 1 the pre-flight report and one line per epoch.
      engine: the single-device `jaxnets.training.LocalEngine` to run on
        (default `jaxnets.training.default_engine`); other engines raise
        ``ConfigError``, as the population epoch is fused on one device.
      allow_nonfinite: let NaN/Inf inputs through instead of raising a
        `DataError`, as in `fit`: each member skips those updates and counts them.

    Returns:
      A `Population`: the stacked member states, each member's history,
      seed, hyperparameters and stopping epoch.

    Example:
      >>> import numpy as np, flax.linen as nn
      >>> from jaxnets.population import fit_population
      >>> from jaxnets.training import create_train_state
      >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
      >>> y = (x[:, 0] > 0).astype(np.int32)
      >>> make = lambda seed: create_train_state(nn.Dense(2), "adam", x[:1], seed=seed)
      >>> pop = fit_population(make, (x, y), seeds=[5, 6, 7], epochs=2, batch_size=16,
      ...                      hparams={"learning_rate": [1e-3, 1e-2, 1e-1]}, verbose=0)
      >>> pop.seeds, pop.states.params["kernel"].shape, [len(h["loss"]) for h in pop.histories]
      ([5, 6, 7], (3, 3, 2), [2, 2, 2])
      >>> [int(step) for step in pop.states.step]  # each member: 2 epochs of 4 steps
      [8, 8, 8]
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
    states = None if callable(make_state) else list(make_state)
    n = n or (len(seeds) if seeds is not None else len(states or [])) or _hparams_length(hparams)
    seeds = list(range(n)) if seeds is None else [int(s) for s in seeds]
    if n < 1 or len(seeds) != n or (states is not None and len(states) != n):
        raise ConfigError(
            f"a population needs n >= 1 members with one seed each; got n={n} and "
            f"{len(seeds)} seeds. Pass n=, seeds=, the member states, or hparams with one "
            "value per member in a list."
        )
    states = states or [make_state(s) for s in seeds]
    # The checks and casts of `fit`, before anything is traced: out-of-range
    # labels would otherwise train silently to NaN, a wrong feature count fail
    # inside Flax.
    check = lambda d: validation.check_inputs(
        states[0], as_arrays(d), allow_nonfinite=allow_nonfinite
    )
    arrays = check(data)
    if validation_data is not None:
        validation_data = check(validation_data)
    monitor = monitor or ("val_loss" if validation_data is not None else "loss")
    sign = 1.0 if _mode(monitor, mode) == "min" else -1.0
    member_hp = _member_hparams(hparams, n)
    for i, hp in enumerate(member_hp):
        for name, value in hp.items():
            if name in hyperparams.MODEL_HYPERPARAMS:  # e.g. dropout_rate: the model reads it
                states[i] = set_model_hyperparam(states[i], name, value)
            else:
                opt_state = optim.set_hyperparam(states[i].opt_state, name, value)
                states[i] = states[i].replace(opt_state=opt_state)
    engine = engine or default_engine()
    if type(engine) is not LocalEngine:  # check_fuse's advice (drop fuse=) does not apply here
        raise ConfigError(
            f"a population's epoch is fused on one device: engine= must be the single-device "
            f"LocalEngine (or None), got {type(engine).__name__}."
        )
    compile_lib.ensure_default_cache()
    stacked = engine.place_state(stack_states(states))
    count = len(arrays["x"])
    data_dev = engine.place_state(arrays)
    # Padding repeats a finite row, as in `fit` (`jaxnets.data.batching.padding_row`).
    pad = padding_row(arrays) if count % batch_size else 0
    plan0 = fused.epoch_plan(count, batch_size, None, 0, pad)
    valid = engine.place_state(plan0["valid"])
    row = engine.place_state({k: v for k, v in plan0.items()})
    zeros = fused.zero_sums(states[0], data_dev, row)
    _check_monitor_logged(monitor, patience, zeros, validation_data is not None)
    report = compile_lib.CompileReport(params=compile_lib.param_count(states[0].params))
    show = (lambda p: fused.print_report(report)) if verbose else None
    run = compile_lib.GuardedStep(
        engine.compile(
            _population_epoch_cpu if jax.default_backend() == "cpu" else population_epoch,
            donate_argnums=(0,),
        ),
        f"population epoch (N={n})",
        ("states", "active", "data", "index", "valid", "zeros"),
        on_compile=show,
        report=report,
    )
    model_hp = sorted(set(member_hp[0]) & set(hyperparams.MODEL_HYPERPARAMS))
    if model_hp:  # a model without a layer that reads them would silently ignore them
        index0 = engine.place_state(np.stack([plan0["index"]] * n))
        # A fresh function each time: JAX caches a trace by function and argument shapes, and
        # a cached trace runs no layer code, so a second population would record no read.
        with hyperparams.record() as read:
            jax.eval_shape(
                lambda *args: population_epoch(*args),
                stacked,
                jnp.ones(n, bool),
                data_dev,
                index0,
                valid,
                zeros,
            )
        if unread := [name for name in model_hp if name not in read]:
            raise ConfigError(
                f"hparams {unread} need a layer that reads them (jaxnets.layers.Dropout for "
                "dropout_rate); this model has none. flax.linen.Dropout's rate is a static "
                "field: build the model with jaxnets layers, or from the zoo with dropout_rate > 0."
            )
    val = None
    if validation_data is not None:
        varrays = as_arrays(validation_data)
        vdata = engine.place_state(varrays)
        vcount = len(varrays["x"])
        vpad = padding_row(varrays) if vcount % batch_size else 0
        vplan = engine.place_state(fused.epoch_plan(vcount, batch_size, None, 0, vpad))
        vzeros = fused.zero_sums(states[0], vdata, vplan)
        val = (engine.compile(population_eval), vdata, vplan, vzeros)
    best, wait = np.full(n, np.inf), np.zeros(n, int)
    active = np.ones(n, bool)
    stopped: list[int | None] = [None] * n
    histories: list[dict] = [{} for _ in range(n)]
    table = states[0].metric_table

    def record(epoch, sums, vsums) -> None:
        """Host side of an epoch: per-member logs, early stopping and the epoch line."""
        host, vhost = engine.fetch((sums, vsums))
        rows = metrics_lib.compute_members(table, host)
        vrows = metrics_lib.compute_members(table, vhost) if vhost is not None else None
        for i in np.flatnonzero(active):
            logs = dict(rows[i])
            if vrows is not None:
                logs.update({f"val_{k}": v for k, v in vrows[i].items()})
            for k, v in logs.items():
                histories[i].setdefault(k, []).append(v)
            if patience is not None and monitor in logs:  # Keras EarlyStopping, per member
                current = sign * float(logs[monitor])
                wait[i] += 1
                if current + abs(min_delta) < best[i]:
                    best[i], wait[i] = current, 0
                elif wait[i] >= patience and epoch > 0:
                    active[i], stopped[i] = False, epoch
        if verbose:
            scores = [sign * h[monitor][-1] for h in histories if monitor in h]
            best_now = f" - best {monitor}: {sign * min(scores):.4f}" if scores else ""
            print(f"Epoch {epoch + 1}/{epochs} - {int(active.sum())}/{n} active{best_now}")

    def epoch_index(epoch):
        orders = [
            fused.epoch_plan(count, batch_size, s if shuffle else None, epoch, pad) for s in seeds
        ]
        return engine.place_state(np.stack([p["index"] for p in orders]))

    # Without early stopping or printing, nothing needs an epoch's metrics before the
    # end: each epoch's sums are only fetched (ready, as the next epoch is queued),
    # and turned into metrics afterwards. Computing them is a program on the same
    # CPU device, which would queue behind the running epoch and leave the device
    # idle while the host logs and dispatches the next (16 small MLPs: an epoch
    # after the first went from 6.6 to 6.0 ms, medians).
    defer = patience is None and not verbose
    pending, fetched = None, []
    index = epoch_index(0)
    for epoch in range(epochs):
        stacked, sums = run(stacked, jnp.asarray(active), data_dev, index, valid, zeros)
        vsums = val[0](stacked, *val[1:]) if val else None
        # The next epoch's batch orders are drawn while this one runs.
        index = epoch_index(epoch + 1) if epoch + 1 < epochs else None
        if pending is not None:
            if defer:
                fetched.append((pending[0], *engine.fetch(pending[1:])))
            else:
                record(*pending)  # epoch e+1 is already queued behind e
        pending = (epoch, sums, vsums)
        if patience is not None:
            record(*pending)
            pending = None
            if not active.any():
                break
    if pending is not None:
        fetched.append(pending)
    for done in fetched:
        record(*done)
    return Population(stacked, histories, seeds, member_hp, stopped, monitor, mode)
