"""Freeze parameters, give groups their own learning rate, unfreeze them gradually.

Parameters are labelled by regular expressions on their path (``/``-joined
inside ``params``, matched in full): ``freeze=["encoder/.*"]`` labels those
leaves ``frozen``; ``learning_rate={"backbone/.*": 1e-4, ".*": 1e-3}`` puts
every other leaf in the group of the first pattern it matches. The optimizer
is ``optax.partition`` (formerly ``optax.multi_transform``): each group runs
`jaxnets.optim.make_optimizer` at its own learning rate, and frozen leaves run
`frozen`, which keeps no state: Optax's ``masked`` puts an empty ``MaskedNode``
where other groups would hold moments, so frozen parameters cost no optimizer
memory.

`frozen` is ``optax.set_to_zero()`` with one change: its updates are ``-0.0``.
``p + 0.0`` turns a parameter equal to ``-0.0`` into ``+0.0``; ``p + (-0.0)``
is ``p`` bitwise for every float, so frozen leaves never change at all.

Group learning rates are ratios of one injected rate, as PyTorch's parameter
groups are under its schedulers: every group holds the first group's rate, and
group ``i`` scales its updates by ``lr_i / lr_0``. A callback that sets the rate
(``ReduceLROnPlateau`` halving it, ``LearningRateScheduler``) so changes every
group by the same factor and keeps their ratios. (Each group injecting its own
rate would have let the callback give every group the first group's rate.)

A freeze or unfreeze pattern that selects no parameter is an error: a typo
would otherwise train what it meant to freeze.

Example:
  >>> import jax.numpy as jnp
  >>> params = {"encoder": {"w": jnp.ones(3)}, "head": {"w": jnp.ones(2)}}
  >>> param_labels(params, {".*": 1e-3}, freeze=["encoder/.*"])
  {'encoder': {'w': 'frozen'}, 'head': {'w': 'group0'}}
"""

from __future__ import annotations

import numbers
import re
import weakref
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

from jaxnets import optim
from jaxnets.callbacks.base import Callback
from jaxnets.checkpoint.structure import path_str
from jaxnets.errors import ConfigError

FROZEN = "frozen"

# The labels function of every `masked_optimizer`, keyed by its ``init`` (a
# GradientTransformation is a tuple of functions and cannot carry more), so that
# `frozen_mask` can tell which leaves an optimizer freezes.
_LABELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def frozen() -> optax.GradientTransformation:
    """A stateless transformation whose updates are ``-0.0``: parameters stay bitwise equal.

    Returns:
      An ``optax.GradientTransformation`` whose state is ``optax.EmptyState()``.

    Example:
      >>> u, _ = frozen().update({"w": jnp.array([1.0, -2.0])}, optax.EmptyState())
      >>> (jnp.array([-0.0, 3.0]) + u["w"]).tolist()
      [-0.0, 3.0]
    """

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(lambda u: jnp.full_like(u, -0.0), updates), state

    return optax.GradientTransformation(init_fn, update_fn)


def _compile(patterns, what: str) -> list[re.Pattern]:
    if isinstance(patterns, str):
        patterns = [patterns]
    try:
        return [re.compile(p) for p in patterns]
    except re.error as e:
        raise ConfigError(f"invalid {what} pattern: {e}") from e


def _groups(learning_rate) -> list[tuple[str, float]]:
    if isinstance(learning_rate, Mapping):
        if not learning_rate:
            raise ConfigError("learning_rate groups must not be empty; add '.*': <lr>.")
        return list(learning_rate.items())
    return [(".*", learning_rate)]


def _share_one_rate(groups) -> bool:
    """Whether the groups' rates are ratios of one injected rate (numbers, the first not 0)."""
    rates = [lr for _, lr in groups]
    return all(isinstance(lr, numbers.Real) for lr in rates) and float(rates[0]) != 0.0


def _group_rates(groups) -> list[tuple[object, float | None]]:
    """``(injected rate, scale)`` of each group: the first group's rate, times ``lr_i / lr_0``.

    Plain numbers share one injected rate so that setting it keeps the groups'
    ratios; a schedule function or a first rate of 0 (no ratio to keep) leaves
    each group its own rate and no scale.
    """
    rates = [lr for _, lr in groups]
    if not _share_one_rate(groups):
        return [(lr, None) for lr in rates]
    first = float(rates[0])
    return [(rates[0], None if float(lr) == first else float(lr) / first) for lr in rates]


def check_patterns_match(params, freeze: Sequence[str] = (), stages=()) -> None:
    """Raises `ConfigError` for a freeze pattern that matches no parameter, or an
    unfreeze pattern (of ``stages``) that matches no frozen parameter.

    Args:
      params: the parameter tree.
      freeze: patterns of frozen leaves (a list, or one pattern as a string).
      stages: ``[(epoch, patterns), ...]`` of unfreezing, as in `param_labels`.

    Example:
      >>> import jax.numpy as jnp
      >>> params = {"encoder": {"w": jnp.ones(3)}, "head": {"w": jnp.ones(2)}}
      >>> check_patterns_match(params, ["encoder/.*"])
      >>> check_patterns_match(params, ["encoder/w", "Encoder/.*"])
      Traceback (most recent call last):
      ...
      jaxnets.errors.ConfigError: freeze pattern 'Encoder/.*' matches no parameter; ...
    """
    names = [path_str(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    freeze_re = _compile(freeze, "freeze")
    for r in freeze_re:
        if not any(r.fullmatch(n) for n in names):
            raise ConfigError(
                f"freeze pattern {r.pattern!r} matches no parameter; patterns are matched "
                f"in full against /-joined paths such as: {shown}."
            )
    frozen_names = [n for n in names if any(r.fullmatch(n) for r in freeze_re)]
    for epoch, patterns in stages:
        for r in _compile(patterns, "unfreeze"):
            if not any(r.fullmatch(n) for n in frozen_names):
                raise ConfigError(
                    f"unfreeze pattern {r.pattern!r} (epoch {epoch}) matches no frozen "
                    f"parameter; frozen: {', '.join(frozen_names[:8]) or 'none'}"
                    f"{', ...' if len(frozen_names) > 8 else ''}."
                )


def param_labels(params, learning_rate, freeze: Sequence[str] = (), stages=()) -> dict:
    """The group label of every parameter leaf.

    Args:
      params: the parameter tree (or the updates, which share its structure).
      learning_rate: a float, or ``{pattern: lr}``; a leaf joins the first match.
      freeze: patterns of frozen leaves.
      stages: ``[(epoch, patterns), ...]`` already unfrozen: a frozen leaf that
        matches joins its learning-rate group under the label ``group<i>@<epoch>``
        (its own optimizer state, started fresh).

    Returns:
      A tree of the structure of ``params`` whose leaves are labels: ``"frozen"``,
      ``"group<i>"`` (``i`` the index of the learning-rate pattern) or ``"group<i>@<epoch>"``.

    Raises:
      ConfigError: a trainable leaf matches no learning-rate pattern.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.checkpoint import param_labels
      >>> params = {"body": {"w": jnp.ones(3)}, "head": {"w": jnp.ones(2)}}
      >>> param_labels(params, {"body/.*": 1e-4, ".*": 1e-3})
      {'body': {'w': 'group0'}, 'head': {'w': 'group1'}}
      >>> param_labels(params, 1e-3, freeze=[".*"], stages=[(2, ["head/.*"])])
      {'body': {'w': 'frozen'}, 'head': {'w': 'group0@2'}}
    """
    groups = [re.compile(p) for p, _ in _groups(learning_rate)]
    freeze_re = _compile(freeze, "freeze")
    stage_re = [(epoch, _compile(p, "unfreeze")) for epoch, p in stages]

    def label(path, _):
        name = path_str(path)
        suffix = ""
        if any(r.fullmatch(name) for r in freeze_re):
            unfrozen = [e for e, rs in stage_re if any(r.fullmatch(name) for r in rs)]
            if not unfrozen:
                return FROZEN
            suffix = f"@{unfrozen[0]}"
        for i, r in enumerate(groups):
            if r.fullmatch(name):
                return f"group{i}{suffix}"
        raise ConfigError(
            f"parameter {name!r} matches no learning-rate pattern "
            f"{[p for p, _ in _groups(learning_rate)]}; add a catch-all '.*'."
        )

    return jax.tree_util.tree_map_with_path(label, params)


def masked_optimizer(
    optimizer: str | Callable[..., optax.GradientTransformation] = "adam",
    *,
    learning_rate=1e-3,
    freeze: Sequence[str] = (),
    stages=(),
    **optimizer_kwargs,
) -> optax.GradientTransformation:
    """An optimizer with frozen leaves and per-group learning rates (`optax.partition`).

    Args:
      optimizer: a name for `jaxnets.optim.make_optimizer`, or a function
        ``learning_rate -> GradientTransformation``.
      learning_rate: a float, or ``{pattern: lr}`` (first match wins).
      freeze: patterns of frozen leaves.
      stages: unfrozen stages, see `param_labels`.
      **optimizer_kwargs: passed to `make_optimizer` (schedule, weight_decay...).

    Returns:
      An ``optax.partition`` transformation with one inner transformation per
      label of `param_labels` (``"frozen"``, ``"group<i>"``, ``"group<i>@<epoch>"``).
      With a named optimizer and number rates, every group injects the first
      group's rate and scales its updates by ``lr_i / lr_0`` (see the module
      docstring): setting the rate keeps the ratios.

    Raises:
      ConfigError: (from ``init``) a freeze pattern matches no parameter, an
        unfreeze pattern no frozen one, or a trainable leaf no learning-rate pattern.

    Example:
      >>> tx = masked_optimizer("adam", learning_rate={"a/.*": 1e-4, ".*": 1e-3}, freeze=["b/.*"])
      >>> params = {"a": {"w": jnp.ones(3)}, "b": {"w": jnp.ones(3)}, "c": {"w": jnp.ones(3)}}
      >>> sorted(tx.init(params).inner_states)
      ['frozen', 'group0', 'group1']
    """
    groups = _groups(learning_rate)
    user_built = callable(optimizer) and not isinstance(optimizer, str)

    def build(lr, rate, scale):
        if user_built:  # the user's function gets the group's own rate
            return optimizer(lr)
        tx = optim.make_optimizer(optimizer, learning_rate=rate, **optimizer_kwargs)
        return tx if scale is None else optax.chain(tx, optax.scale(scale))

    transforms = {FROZEN: frozen()}
    for i, ((_, lr), (rate, scale)) in enumerate(zip(groups, _group_rates(groups), strict=True)):
        transforms[f"group{i}"] = build(lr, rate, scale)
        for epoch, _ in stages:
            transforms[f"group{i}@{epoch}"] = build(lr, rate, scale)
    labels = lambda tree: param_labels(tree, learning_rate, freeze, stages)
    tx = optax.partition(transforms, labels)

    def init(params):
        check_patterns_match(params, freeze, stages)
        return tx.init(params)

    _LABELS[init] = labels
    return tx._replace(init=init)


def frozen_mask(tx, params):
    """Which leaves of ``params`` the optimizer ``tx`` freezes: a tree of bools, or None
    when ``tx`` is not a `masked_optimizer` (then it freezes nothing by pattern).

    Example:
      >>> params = {"body": {"w": jnp.ones(3)}, "head": {"w": jnp.ones(2)}}
      >>> frozen_mask(masked_optimizer("sgd", freeze=["body/.*"]), params)
      {'body': {'w': True}, 'head': {'w': False}}
      >>> frozen_mask(optax.sgd(0.1), params) is None
      True
    """
    labels = _LABELS.get(getattr(tx, "init", None))
    if labels is None:
        return None
    return jax.tree.map(lambda label: label == FROZEN, labels(params))


def freeze_params(state, freeze: Sequence[str] = (), *, optimizer="adam", learning_rate=1e-3, **kw):
    """``state`` with a `masked_optimizer` and its freshly initialized state.

    The previous optimizer state is discarded (moments and step count start again).

    Args:
      state: the `TrainState` whose ``tx`` and ``opt_state`` are replaced.
      freeze: regular expressions on parameter paths (``/``-joined, matched in
        full) of the leaves to freeze.
      optimizer: as in `masked_optimizer`: a name for `jaxnets.optim.make_optimizer`
        (default ``"adam"``) or a function ``learning_rate -> GradientTransformation``.
      learning_rate: a float, or ``{pattern: lr}`` per group (first match wins).
      **kw: passed to `masked_optimizer` (``stages``, and optimizer options such
        as ``schedule`` or ``weight_decay`` for `make_optimizer`).

    Returns:
      A copy of ``state`` with the new ``tx`` and ``opt_state = tx.init(state.params)``.

    Example:
      >>> import flax.linen as nn
      >>> from jaxnets.training import create_train_state
      >>> state = create_train_state(nn.Dense(2), "adam", jnp.zeros((1, 3)), learning_rate=0.1)
      >>> state = freeze_params(state, ["kernel"], learning_rate=0.1)
      >>> state.opt_state.inner_states["frozen"].inner_state
      EmptyState()
    """
    tx = masked_optimizer(optimizer, learning_rate=learning_rate, freeze=freeze, **kw)
    return state.replace(tx=tx, opt_state=tx.init(state.params))


class GradualUnfreezing(Callback):
    """Unfreezes parameter groups at given epochs (ULMFiT-style gradual unfreezing).

    Build the starting state with `prepare`, then pass the callback to ``fit``.
    At the beginning of each scheduled epoch the matching frozen leaves join
    their learning-rate group with a fresh optimizer state of their own (step
    count and schedule start at 0 for them, so Adam's bias correction holds) at
    the current learning rate (the one a callback such as ``ReduceLROnPlateau``
    may have lowered, times the group's ratio); the states of groups already
    training are kept unchanged. The optimizer is
    static configuration of the `TrainState`, so each unfreezing costs one
    recompilation of the training step; no other step recompiles.

    Its state (the stages applied) is checkpointed, and `restore_target`
    rebuilds the optimizer before a checkpoint is restored, so resuming works.

    Args:
      schedule: ``{epoch: patterns}``: unfreeze the matching leaves when ``epoch`` begins.
      freeze: patterns of leaves frozen at the start (a list, or one pattern as a string).
      optimizer, learning_rate, **optimizer_kwargs: as in `masked_optimizer`.

    Example:
      >>> import flax.linen as nn
      >>> from jaxnets.training import create_train_state
      >>> unfreeze = GradualUnfreezing({1: ["kernel"]}, freeze=["kernel"], learning_rate=0.1)
      >>> state = unfreeze.prepare(
      ...     create_train_state(nn.Dense(2), "sgd", jnp.zeros((1, 3)), learning_rate=0.1))
      >>> sorted(state.opt_state.inner_states)
      ['frozen', 'group0']
    """

    def __init__(
        self,
        schedule: Mapping[int, Sequence[str]],
        *,
        freeze: Sequence[str],
        optimizer="adam",
        learning_rate=1e-3,
        **optimizer_kwargs,
    ):
        super().__init__()
        self.schedule = {int(e): list(_compile_check(p)) for e, p in sorted(schedule.items())}
        self.freeze = [freeze] if isinstance(freeze, str) else list(freeze)
        self.optimizer, self.learning_rate = optimizer, learning_rate
        self.optimizer_kwargs = optimizer_kwargs
        self.applied: list[int] = []

    def _tx(self, applied):
        # Unfrozen leaves get new labels, so the groups already training keep
        # their labels, members and optimizer state.
        stages = [(e, self.schedule[e]) for e in applied]
        return masked_optimizer(
            self.optimizer,
            learning_rate=self.learning_rate,
            freeze=self.freeze,
            stages=stages,
            **self.optimizer_kwargs,
        )

    def prepare(self, state):
        """``state`` with the initial freezing applied and a fresh optimizer state.

        Raises:
          ConfigError: a freeze pattern matches no parameter, or an unfreeze pattern
            no frozen parameter (checked now, not when its epoch comes).
        """
        check_patterns_match(state.params, self.freeze, list(self.schedule.items()))
        self.applied = []
        tx = self._tx([])
        return state.replace(tx=tx, opt_state=tx.init(state.params))

    def on_epoch_begin(self, epoch, logs=None):
        due = [e for e in self.schedule if e <= epoch and e not in self.applied]
        if not due:
            return
        state = self.model.state
        if not hasattr(state.opt_state, "inner_states"):
            raise ConfigError(
                "GradualUnfreezing needs the state it prepared: pass unfreeze.prepare(state) to fit."
            )
        applied = sorted(self.applied + due)
        tx = self._tx(applied)
        fresh = tx.init(state.params)
        old = state.opt_state.inner_states
        inner = {
            label: old[label] if label in old and label != FROZEN else s
            for label, s in fresh.inner_states.items()
        }
        opt_state = self._current_rate(state.opt_state, fresh._replace(inner_states=inner))
        self.model.state = state.replace(tx=tx, opt_state=opt_state)
        self.applied = applied

    def _current_rate(self, old_state, new_state):
        """``new_state`` with the learning rate ``old_state`` trains at, in every group.

        The fresh groups start at the configured rate; the others may have been
        changed by a callback since. All groups hold one shared rate (see
        `masked_optimizer`), so setting it everywhere changes only the new ones.
        """
        user_built = callable(self.optimizer) and not isinstance(self.optimizer, str)
        if user_built or not _share_one_rate(_groups(self.learning_rate)):
            return new_state
        try:
            # A number, not the array: each group must get its own buffer (fit donates them).
            rate = float(optim.get_hyperparam(old_state, "learning_rate"))
            return optim.set_hyperparam(new_state, "learning_rate", rate)
        except ConfigError:  # an optimizer without an injected rate: nothing to carry
            return new_state

    def get_state(self) -> dict:
        return {"applied": list(self.applied)}

    def set_state(self, state: dict):
        self.applied = [int(e) for e in state.get("applied", [])]

    def restore_target(self, state, saved: dict):
        """The restore target with the optimizer structure the checkpoint was saved with."""
        tx = self._tx([int(e) for e in saved.get("applied", [])])
        return state.replace(tx=tx, opt_state=tx.init(state.params))


def _compile_check(patterns):
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    _compile(patterns, "unfreeze")
    return patterns
