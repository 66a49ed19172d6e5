"""Freeze parameters, give groups their own learning rate, unfreeze them gradually.

Parameters are labelled by regular expressions on their path (``/``-joined
inside ``params``, matched in full): ``freeze=["encoder/.*"]`` labels those
leaves ``frozen``; ``learning_rate={"backbone/.*": 1e-4, ".*": 1e-3}`` puts
every other leaf in the group of the first pattern it matches. The optimizer
is ``optax.partition`` (formerly ``optax.multi_transform``): each group runs
`jaxnets.optim.make_optimizer` with its own learning rate (injected, so
callbacks can change it), and frozen leaves run `frozen`, which keeps no state:
Optax's ``masked`` puts an empty ``MaskedNode`` where other groups would hold
moments, so frozen parameters cost no optimizer memory.

`frozen` is ``optax.set_to_zero()`` with one change: its updates are ``-0.0``.
``p + 0.0`` turns a parameter equal to ``-0.0`` into ``+0.0``; ``p + (-0.0)``
is ``p`` bitwise for every float, so frozen leaves never change at all.

Example:
  >>> import jax.numpy as jnp
  >>> params = {"encoder": {"w": jnp.ones(3)}, "head": {"w": jnp.ones(2)}}
  >>> param_labels(params, {".*": 1e-3}, freeze=["encoder/.*"])
  {'encoder': {'w': 'frozen'}, 'head': {'w': 'group0'}}
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

from jaxnets import optim
from jaxnets.callbacks.base import Callback
from jaxnets.checkpoint.structure import path_str
from jaxnets.errors import ConfigError

FROZEN = "frozen"


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

    Example:
      >>> tx = masked_optimizer("adam", learning_rate={"a/.*": 1e-4, ".*": 1e-3}, freeze=["b/.*"])
      >>> params = {"a": {"w": jnp.ones(3)}, "b": {"w": jnp.ones(3)}, "c": {"w": jnp.ones(3)}}
      >>> sorted(tx.init(params).inner_states)
      ['frozen', 'group0', 'group1']
    """
    groups = _groups(learning_rate)

    def build(lr):
        if callable(optimizer) and not isinstance(optimizer, str):
            return optimizer(lr)
        return optim.make_optimizer(optimizer, learning_rate=lr, **optimizer_kwargs)

    transforms = {FROZEN: frozen()}
    for i, (_, lr) in enumerate(groups):
        transforms[f"group{i}"] = build(lr)
        for epoch, _ in stages:
            transforms[f"group{i}@{epoch}"] = build(lr)
    labels = lambda tree: param_labels(tree, learning_rate, freeze, stages)
    return optax.partition(transforms, labels)


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
    count and schedule start at 0 for them, so Adam's bias correction holds); the
    states of groups already training are kept unchanged. The optimizer is
    static configuration of the `TrainState`, so each unfreezing costs one
    recompilation of the training step; no other step recompiles.

    Its state (the stages applied) is checkpointed, and `restore_target`
    rebuilds the optimizer before a checkpoint is restored, so resuming works.

    Args:
      schedule: ``{epoch: patterns}``: unfreeze the matching leaves when ``epoch`` begins.
      freeze: patterns of leaves frozen at the start.
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
        self.freeze = list(freeze)
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
        """``state`` with the initial freezing applied and a fresh optimizer state."""
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
        self.model.state = state.replace(tx=tx, opt_state=fresh._replace(inner_states=inner))
        self.applied = applied

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
