"""`TrainState`: everything that changes during training, in one pytree.

The state holds the parameters, the model's other variable collections (e.g.
BatchNorm statistics), the optimizer state, the step counter, a PRNG key and a
count of updates skipped for non-finite values. Its static fields (the
module's ``apply``, the optimizer, the loss and the metrics) are configuration:
they are part of the pytree's structure, so ``train_step(state, batch)`` needs
nothing else.

Example:
  >>> import jax.numpy as jnp
  >>> import flax.linen as nn
  >>> from jaxnets.training import create_train_state
  >>> state = create_train_state(nn.Dense(3), "sgd", jnp.zeros((1, 4)), learning_rate=0.1)
  >>> int(state.step), state.params["kernel"].shape
  (0, (4, 3))
"""

from __future__ import annotations

import dataclasses
import inspect
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxnets import compile_cache, executable_store, optim, regularizers, validation
from jaxnets import losses as losses_lib
from jaxnets import metrics as metrics_lib
from jaxnets import precision as precision_lib
from jaxnets.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ModuleApply:
    """``module.apply``, equal for equal modules.

    A TrainState's ``apply_fn`` is static: part of its pytree structure, and so
    of every compiled step's cache key. Bound methods compare by the identity
    of their module (Python >= 3.8), so two states of equal but separately
    built modules would each trace and lower the step again; this wrapper
    compares the modules themselves (Flax modules are dataclasses).

    Example:
      >>> import flax.linen as nn
      >>> ModuleApply(nn.Dense(2)) == ModuleApply(nn.Dense(2)), nn.Dense(2).apply == nn.Dense(2).apply
      (True, False)
    """

    module: Any

    def __call__(self, *args, **kwargs):
        return self.module.apply(*args, **kwargs)


class TrainState(struct.PyTreeNode):
    """The training state: a pytree whose leaves are arrays.

    Attributes:
      step: number of training steps taken (int32 scalar).
      params: the ``'params'`` collection.
      model_state: every other collection, e.g. ``{'batch_stats': ...}``.
      opt_state: the Optax state (learning rate inside, see `jaxnets.optim`).
      rng: base PRNG key; step ``t`` uses ``fold_in(rng, t)``.
      skipped: number of updates skipped because the loss or a gradient was
        not finite.
      apply_fn, tx, loss, metrics, l1, l2: static configuration.
      call_kwargs: which mode argument (``train``, ``training`` or
        ``deterministic``) and ``mask`` the module's ``__call__`` accepts
        (plain ``nn.Dense`` takes none); see `mode_kwargs`.
      input_spec: shape and dtype of one sample example and of its output
        (`jaxnets.validation.InputSpec`), for checking inputs before tracing.
      precision: compute dtype name (see `jaxnets.precision`); params stay float32.
      loss_scale: a `jaxnets.precision.DynamicScale` for float16, else None.
      hparams: model hyperparameters held as arrays, e.g. ``{"dropout_rate":
        0.3}`` (see `set_model_hyperparam`); the training step injects them
        into the model (`jaxnets.layers.hyperparams`). Empty by default.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import flax.linen as nn
      >>> from jaxnets.training import create_train_state
      >>> state = create_train_state(nn.Dense(2), "sgd", jnp.zeros((1, 3)), learning_rate=0.1)
      >>> jax.tree.map(jnp.shape, state.params), sorted(state.variables), int(state.skipped)
      ({'bias': (2,), 'kernel': (3, 2)}, ['params'], 0)
      >>> int(state.replace(step=state.step + 5).step)  # immutable: replace returns a copy
      5
    """

    step: jax.Array
    params: Any
    model_state: Any
    opt_state: Any
    rng: jax.Array
    skipped: jax.Array
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    loss: losses_lib.Loss = struct.field(pytree_node=False)
    metrics: tuple = struct.field(pytree_node=False, default=())
    l1: float = struct.field(pytree_node=False, default=0.0)
    l2: float = struct.field(pytree_node=False, default=0.0)
    call_kwargs: tuple = struct.field(pytree_node=False, default=("train",))
    input_spec: validation.InputSpec | None = struct.field(pytree_node=False, default=None)
    precision: str = struct.field(pytree_node=False, default="float32")
    loss_scale: Any = None
    hparams: dict = struct.field(default_factory=dict)

    @property
    def variables(self) -> dict:
        """The variables ``apply_fn`` takes: params plus the model state."""
        return {"params": self.params, **self.model_state}

    @property
    def metric_table(self) -> dict:
        return {m.name: m for m in self.metrics}

    def step_key(self, step=None) -> jax.Array:
        """The PRNG key of a step (dropout and other per-step randomness)."""
        return jax.random.fold_in(self.rng, self.step if step is None else step)


def set_model_hyperparam(state: TrainState, name: str, value) -> TrainState:
    """Returns ``state`` with a model hyperparameter held as a float32 array.

    The training step injects it into the model: ``dropout_rate`` replaces the
    rate of every `jaxnets.layers.Dropout` while training. As an array it
    changes without a recompile, and population members each hold their own.

    Args:
      state: the `TrainState` to copy; it is not modified.
      name: a known model hyperparameter; at present only ``"dropout_rate"``.
      value: the new value, a number; for ``dropout_rate`` in ``[0, 1)``, the
        fraction of inputs each `jaxnets.layers.Dropout` zeroes in training.

    Returns:
      A copy of ``state`` whose ``hparams[name]`` is ``value`` as a float32 scalar array.

    Raises:
      ConfigError: an unknown ``name``, or a ``dropout_rate`` outside ``[0, 1)``.

    Example:
      >>> import numpy as np
      >>> from jaxnets import models
      >>> mlp = models.get("mlp", features=(4,), dropout_rate=0.1, input_shape=(3,))
      >>> state = create_train_state(mlp, "adam", np.zeros((1, 3), np.float32))
      >>> float(set_model_hyperparam(state, "dropout_rate", 0.25).hparams["dropout_rate"])
      0.25
    """
    from jaxnets.layers.hyperparams import MODEL_HYPERPARAMS

    if name not in MODEL_HYPERPARAMS:
        raise ConfigError(
            f"unknown model hyperparameter {name!r}; known: "
            + ", ".join(f"{k} ({v})" for k, v in MODEL_HYPERPARAMS.items())
        )
    if name == "dropout_rate" and not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"dropout_rate must be in [0, 1), got {value!r}.")
    return state.replace(hparams={**state.hparams, name: jnp.asarray(value, jnp.float32)})


# The names a module's ``__call__`` may take for the training mode, in order of
# preference: ``train`` (this library's), ``training`` (Keras') and ``deterministic``
# (Flax's, inverted). A module that takes none of them is called without one.
MODE_KWARGS = ("train", "training", "deterministic")


def accepted_call_kwargs(module: nn.Module) -> tuple[str, ...]:
    """Which mode argument and ``mask`` ``module.__call__`` accepts.

    The mode argument is one of `MODE_KWARGS` (``train``, ``training``,
    ``deterministic``): at most one is returned, the first the signature names.
    ``**kwargs`` counts as ``train`` (and ``mask``).

    Example:
      >>> import flax.linen as nn
      >>> class Net(nn.Module):
      ...     def __call__(self, x, deterministic: bool = True, mask=None):
      ...         return x
      >>> accepted_call_kwargs(Net()), accepted_call_kwargs(nn.Dense(2))
      (('deterministic', 'mask'), ())
    """
    params = inspect.signature(module.__call__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return ("train", "mask")
    mode = next((k for k in MODE_KWARGS if k in params), None)
    return tuple(k for k in (mode, "mask") if k is not None and k in params)


def mode_kwargs(call_kwargs: Sequence[str], train: bool) -> dict:
    """The keyword argument that puts a module in training (or inference) mode.

    Args:
      call_kwargs: the module's accepted names (`accepted_call_kwargs`, or a
        `TrainState`'s ``call_kwargs``).
      train: whether the call trains (dropout on, batch statistics updated).

    Returns:
      ``{"train": train}``, ``{"training": train}``, ``{"deterministic": not
      train}``, or ``{}`` for a module that takes none of them.

    Example:
      >>> mode_kwargs(("deterministic", "mask"), True), mode_kwargs(("train",), False)
      ({'deterministic': False}, {'train': False})
    """
    if "train" in call_kwargs:
        return {"train": train}
    if "training" in call_kwargs:
        return {"training": train}
    if "deterministic" in call_kwargs:
        return {"deterministic": not train}
    return {}


def _int_seed(seed):
    """``seed`` as a Python int if it is an integer scalar (np.int64, 0-d int array), else itself.

    A typed PRNG key is 0-d too, but of a key dtype, and a raw key has shape (2,):
    both are returned unchanged.
    """
    if isinstance(seed, int):
        return seed
    dtype = getattr(seed, "dtype", None)
    if dtype is not None and np.ndim(seed) == 0 and jnp.issubdtype(dtype, np.integer):
        return int(seed)
    return seed


def _seed_array(seed) -> np.ndarray | None:
    """An int ``seed`` as the array `jax.random.key` makes of it; None for a key or a too-big int.

    `jax.random.key(seed)` converts an int through ``int64`` to JAX's default int
    type (int32 unless x64 is on); the same array traced gives the same key.
    """
    if not isinstance(seed, int):
        return None
    dtype = jax.dtypes.canonicalize_dtype(np.int64)
    info = np.iinfo(dtype)
    return np.asarray(seed, dtype) if info.min <= seed <= info.max else None


# Jitted init programs by (module, optimizer, seed kind). Members made one by one
# (a population's ``make_state(seed)``, a search's generation) usually build equal
# modules and optimizers and differ only in the seed, an argument: reusing the jitted
# function lets JAX reuse its trace and lowering (~60 ms for a small MLP each).
# Linen modules compare by their fields; a field holding a function compares by
# identity, so only configurations that build the same program meet.
_INIT_PROGRAMS: OrderedDict = OrderedDict()
_INIT_PROGRAMS_LIMIT = 16  # each entry keeps its module, optimizer and compiled program alive


def _init_program(module: nn.Module, tx, optimizer_spec, from_seed: bool):
    """The jitted ``init_arrays(seed_or_key, x)`` of ``module`` with ``tx``, reused when equal.

    ``optimizer_spec`` is ``(optimizer, optimizer_kwargs)`` as given to
    `create_train_state`: ``tx`` is built from it, so equal specs give equal ``tx``.
    """
    optimizer, kwargs = optimizer_spec
    key = (type(module), module, optimizer, tuple(sorted(kwargs.items())), from_seed)
    try:
        found = _INIT_PROGRAMS.get(key)
    except TypeError:  # an unhashable field (a list, an array): build it afresh
        key, found = None, None
    if found is not None:
        return found
    call_kwargs = accepted_call_kwargs(module)
    init_kwargs = mode_kwargs(call_kwargs, train=False)

    # Everything that creates arrays runs as one program: one trace and one
    # compile (or persistent-cache load) instead of one per eager op, which is
    # most of a warm start's time outside imports.
    def init_arrays(seed_or_key, x):
        key = jax.random.key(seed_or_key) if from_seed else seed_or_key
        init_key, dropout_key, run_key = jax.random.split(key, 3)
        output, variables = module.init_with_output(
            {"params": init_key, "dropout": dropout_key}, x, **init_kwargs
        )
        variables = dict(variables)
        params = variables.pop("params", {})
        variables.pop(regularizers.COLLECTION, None)  # penalties are recomputed each step
        step, skipped = jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32)
        return output, params, variables, tx.init(params), run_key, step, skipped

    program = jax.jit(init_arrays)
    if key is not None:
        _INIT_PROGRAMS[key] = program
        while len(_INIT_PROGRAMS) > _INIT_PROGRAMS_LIMIT:
            _INIT_PROGRAMS.popitem(last=False)
    return program


def create_train_state(
    module: nn.Module,
    optimizer: str | optax.GradientTransformation,
    sample_input,
    *,
    loss: str | Callable | losses_lib.Loss = "sparse_categorical_crossentropy",
    metrics: Sequence = ("accuracy",),
    seed: int | jax.Array = 0,
    l1: float = 0.0,
    l2: float = 0.0,
    precision: str = "float32",
    **optimizer_kwargs,
) -> TrainState:
    """Initializes a Flax Linen module and wraps it with an optimizer in a `TrainState`.

    Args:
      module: any Linen module called as ``module(x, train=bool)`` (or with
        ``training=bool``, or ``deterministic=not train``; see `mode_kwargs`).
      optimizer: an optimizer name (see `jaxnets.optim.make_optimizer`, which
        receives ``optimizer_kwargs`` such as ``learning_rate``) or an optax
        ``GradientTransformation``.
      sample_input: an input batch (only its shape and dtype matter), or a dict
        of inputs passed as the first argument (for your own loop of
        `train_step`; `fit`, `evaluate` and `predict` batch one input array).
      loss: a loss name, callable or `jaxnets.losses.Loss`.
      metrics: metric names or objects (see `jaxnets.metrics.get`).
      seed: an int (a numpy integer or a 0-d integer array too) or a PRNG key;
        parameters and per-step keys derive from it.
      l1, l2: penalties on the sum of absolute / squared weights (parameters
        with two or more axes, i.e. kernels and embeddings, not biases).
      precision: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (with dynamic
        loss scaling): the dtype the model computes in; params stay float32.
      **optimizer_kwargs: options for `jaxnets.optim.make_optimizer` when
        ``optimizer`` is a name (``learning_rate``, ``schedule``,
        ``weight_decay``...); an error with an optax transformation.

    Returns:
      A `TrainState` at step 0 with freshly initialized parameters, model state
      and optimizer state.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.layers import BatchNormalization
      >>> from jaxnets.training import create_train_state
      >>> state = create_train_state(BatchNormalization(), "adam", jnp.zeros((1, 3)),
      ...                            loss="mse", metrics=(), precision="bfloat16")
      >>> jax.tree.map(jnp.shape, state.model_state)  # running statistics, not params
      {'batch_stats': {'mean': (3,), 'var': (3,)}}
      >>> state.params["scale"].dtype, state.precision, state.loss.kind
      (dtype('float32'), 'bfloat16', 'regression')
    """
    validation.check_module_config(module)
    precision = precision_lib.canonical(precision)
    if isinstance(optimizer, str):
        tx = optim.make_optimizer(optimizer, **optimizer_kwargs)
    elif isinstance(optimizer, optax.GradientTransformation):
        if optimizer_kwargs:
            raise ConfigError(
                f"optimizer options {sorted(optimizer_kwargs)} apply to optimizer names only; "
                "an optax transformation is already configured."
            )
        tx = optimizer
    else:
        raise ConfigError(
            f"optimizer must be a name such as 'adam' or an optax.GradientTransformation, "
            f"got {type(optimizer).__name__}."
        )
    for name, value in (("l1", l1), ("l2", l2)):
        if value < 0:
            raise ConfigError(f"{name} must be >= 0, got {value}.")
    # An int seed becomes the key inside the init program: `jax.random.key` run
    # eagerly is two more programs to compile (or load) before the first step.
    seed = _int_seed(seed)
    seed_array = _seed_array(seed)
    from_seed = seed_array is not None
    if from_seed:
        seed_or_key = seed_array
    else:
        seed_or_key = jax.random.key(seed) if isinstance(seed, int) else seed
    call_kwargs = accepted_call_kwargs(module)
    # The persistent cache is on before the first program, not only from the first
    # `fit`: a script that makes its states first (a population's members) loads
    # their init programs in every later run instead of compiling them.
    compile_cache.ensure_default_cache()
    init_program = _init_program(module, tx, (optimizer, optimizer_kwargs), from_seed)
    sample_output, params, variables, opt_state, run_key, step, skipped = executable_store.call(
        "init", init_program, seed_or_key, sample_input
    )
    metric_objs = tuple(metrics_lib.get(m) for m in metrics)
    names = [m.name for m in metric_objs]
    if len(set(names)) != len(names) or "loss" in names:
        raise ConfigError(f"metric names must be unique and not 'loss', got {names}.")
    return TrainState(
        step=step,
        params=params,
        model_state=variables,
        opt_state=opt_state,
        rng=run_key,
        skipped=skipped,
        apply_fn=ModuleApply(module),
        tx=tx,
        loss=losses_lib.get(loss),
        metrics=metric_objs,
        l1=float(l1),
        l2=float(l2),
        call_kwargs=call_kwargs,
        input_spec=validation.InputSpec.of(sample_input, sample_output),
        precision=precision,
        loss_scale=precision_lib.initial_loss_scale(precision),
    )
