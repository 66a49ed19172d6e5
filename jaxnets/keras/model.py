"""`Model`: Keras's compile / fit / evaluate / predict over the functional core.

``Model(module)`` wraps any Flax Linen module. Everything that trains is the
functional `jaxnets.training.TrainState` in ``model.state``; ``fit`` calls
`jaxnets.training.fit` with the model as the callbacks' ``self.model``, and
``model.train_step`` is the pure step. Take the state out, transform it, and
put it back (``model.state = new_state``) whenever you like.

The model is built lazily: from the first data it sees, from ``build(shape)``,
or (`Sequential`) from the first layer's ``input_shape``.

Example:
  >>> import numpy as np, flax.linen as nn
  >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
  >>> y = (x[:, 0] > 0).astype(np.int32)
  >>> model = Model(nn.Dense(2))
  >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
  ...               metrics=["accuracy"], learning_rate=0.1)
  >>> history = model.fit(x, y, epochs=5, verbose=0)
  >>> loss, accuracy = model.evaluate(x, y, verbose=0)
  >>> len(history.history["loss"]), accuracy > 0.8, model.predict(x[:2]).shape
  (5, True, (2, 2))
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnets import losses as losses_lib
from jaxnets import metrics as metrics_lib
from jaxnets import training as training_lib
from jaxnets.errors import ConfigError, ShapeError
from jaxnets.keras import compile_utils
from jaxnets.keras.eager import EagerEngine
from jaxnets.keras.loops import Loops
from jaxnets.keras.optimizer_view import (
    OptimizerView,
    learning_rate_schedule,
    with_rate_set_before_build,
)
from jaxnets.keras.weight_order import get_path, keras_paths, with_leaves
from jaxnets.training.engine import default_engine
from jaxnets.training.state import MODE_KWARGS, TrainState, create_train_state, mode_kwargs


class FacadeState:
    """The mutable Keras-side attributes of a model (kept apart from Linen fields)."""

    def __init__(self, module=None, seed: int = 0):
        self.module = module
        self.seed = seed
        self.variables = None  # {'params': ..., other collections} before compile
        self.input_spec = None  # (shape without the batch axis, dtype name)
        self.state: TrainState | None = None
        self.compile_kwargs = None  # what compile() resolved, to rebuild the state
        self.compile_config = None  # the JSON form of compile()'s arguments, or None
        self.engine = default_engine()
        self.stop_training = False
        self.history = None
        self.fit_calls = 0  # each fit call shuffles in a new order, as Keras does
        self.warned_save = False  # save() said once that compile() is not saved
        self.output_masked = None  # whether outputs carry an Embedding(mask_zero=True) mask
        # A rate set through model.optimizer before the model is built: an optimizer
        # state over no parameters holding it, until the real state is made.
        self.opt_state_unbuilt = None
        self.lr_schedule = None  # compile(learning_rate=<an Optax schedule>), for model.optimizer
        self.several_outputs = None  # whether the module returns a tuple or dict (None: unknown)


def _check_one_input(module) -> None:
    """`ConfigError` for a module whose ``__call__`` needs several inputs: the loops pass one.

    Without it Flax fails at the first data with a TypeError about a missing argument.
    """
    params = inspect.signature(module.__call__).parameters.values()
    required = [
        p.name
        for p in params
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and p.name not in (*MODE_KWARGS, "mask")
    ]
    if len(required) > 1:
        raise ConfigError(
            f"Model calls {type(module).__name__} with one input array, but its __call__ needs "
            f"{len(required)} ({', '.join(required)}); take one array (concatenate the inputs "
            "and split them inside the module)."
        )


class Model(Loops):
    """Keras's training API for any Flax Linen module.

    Args:
      module: a Linen module called as ``module(x, train=bool)`` (``train`` optional).
      name: a name for summaries.
      seed: seeds the parameters, dropout and the shuffling order.

    Example:
      >>> import numpy as np, flax.linen as nn
      >>> import jaxnets
      >>> model = jaxnets.Model(nn.Dense(2), name="linear")
      >>> model.compile(optimizer="sgd", loss="mse")
      >>> model.built  # built from the first data it sees
      False
      >>> x, y = np.ones((16, 3), np.float32), np.zeros((16, 2), np.float32)
      >>> history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
      >>> model.count_params(), int(model.state.step)  # 3 * 2 + 2; 2 epochs of 2 steps
      (8, 4)
      >>> model.predict(x[:5]).shape
      (5, 2)
    """

    def __init__(self, module, *, name: str | None = None, seed: int = 0):
        import flax.linen as nn

        if not isinstance(module, nn.Module):
            raise ConfigError(f"Model wraps a Flax Linen module, got {type(module).__name__}.")
        _check_one_input(module)
        self._keras = FacadeState(module, seed)
        self.name = name or type(module).__name__.lower()

    # -- state -------------------------------------------------------------
    @property
    def module(self):
        """The Linen module with the full outputs (probabilities after a final softmax)."""
        return self._keras.module if self._keras.module is not None else self

    @property
    def state(self) -> TrainState | None:
        """The functional `TrainState` (None until compiled and built)."""
        return self._keras.state

    @state.setter
    def state(self, value):
        if value is not None and not isinstance(value, TrainState):
            raise ConfigError(f"model.state takes a TrainState, got {type(value).__name__}.")
        self._keras.state = value

    @property
    def stop_training(self) -> bool:
        return self._keras.stop_training

    @stop_training.setter
    def stop_training(self, value):
        self._keras.stop_training = bool(value)

    @property
    def seed(self) -> int:
        return self._keras.seed

    @seed.setter
    def seed(self, value):
        self._keras.seed = int(value)

    @property
    def history(self):
        """The `jaxnets.callbacks.History` of the last ``fit``."""
        return self._keras.history

    @history.setter
    def history(self, value):
        self._keras.history = value

    @property
    def train_step(self):
        """The pure step ``(state, batch) -> (state, metric sums)`` that ``fit`` compiles."""
        return training_lib.train_step

    @property
    def optimizer(self) -> OptimizerView | None:
        """The compiled optimizer's view (``learning_rate``); None before ``compile``."""
        return OptimizerView(self) if self.state is not None or self.compiled else None

    @property
    def built(self) -> bool:
        return self._keras.variables is not None or self._keras.state is not None

    @property
    def compiled(self) -> bool:
        return self._keras.compile_kwargs is not None

    @property
    def metrics_names(self) -> list[str]:
        kw = self._keras.compile_kwargs or {}
        return ["loss", *(metrics_lib.get(m).name for m in kw.get("metrics", ()))]

    def default_input(self):
        """A sample input to build from without data (None: wait for data)."""
        return None

    def frozen_patterns(self) -> list[str]:
        """Patterns of the parameters frozen by ``trainable=False`` (none for a plain module)."""
        return []

    def takes_tokens(self) -> bool | None:
        """Whether the model's input is integer ids (None: unknown, keep the data's dtype)."""
        return None

    # -- build and compile ----------------------------------------------------
    def build(self, input_shape=None, dtype="float32"):
        """Creates the variables for inputs of ``input_shape`` (batch axis first, may be None)."""
        if input_shape is None:
            sample = self.default_input()
            if sample is None:
                raise ConfigError("build() needs input_shape, e.g. model.build((None, 28, 28, 1)).")
        else:
            shape = tuple(1 if d is None else int(d) for d in input_shape)
            sample = jnp.zeros(shape, dtype)
        self._build_from(sample)

    def _build_from(self, sample):
        sample = np.asarray(sample)[:1]
        if self.takes_tokens() is False and not np.issubdtype(sample.dtype, np.floating):
            # Keras models take float32 unless they embed tokens: uint8 images or
            # integer features are features, and the data is cast to float32.
            sample = sample.astype(np.float32)
        elif sample.dtype == np.float64:
            sample = sample.astype(np.float32)  # JAX computes in float32 (x64 off)
        self._keras.input_spec = (tuple(sample.shape[1:]), str(sample.dtype))
        if self.compiled:  # one initialisation: straight to the TrainState
            self._make_state(sample)
        else:
            st = create_train_state(
                self.module, optax.identity(), sample, metrics=(), seed=self.seed
            )
            self._keras.variables = st.variables

    def _ensure_built(self, sample=None):
        if not self.built:
            auto = self.default_input()
            if auto is None and sample is None:
                raise ConfigError("the model is not built: call build(input_shape) or pass data.")
            self._build_from(auto if auto is not None else sample)
        if self.compiled and self.state is None:
            self._make_state()

    def compile(
        self,
        optimizer="rmsprop",
        loss=None,
        metrics=None,
        loss_weights=None,
        weighted_metrics=None,
        run_eagerly: bool = False,
        jit: bool = True,
        jit_compile: bool | str = "auto",
        **optimizer_kwargs,
    ):
        """Configures training (Keras ``compile``); optimizer options such as
        ``learning_rate`` may be passed as keywords."""
        tx, opt_config = compile_utils.resolve_optimizer(optimizer, optimizer_kwargs)
        loss_obj, train_module = compile_utils.resolve_loss(loss, self.module)
        loss_obj = compile_utils.apply_loss_weights(loss_obj, loss_weights)
        metric_list = compile_utils.resolve_metrics(
            metrics, weighted_metrics, getattr(loss_obj, "kind", None)
        )
        eager = run_eagerly or not jit or jit_compile is False
        self._keras.engine = EagerEngine() if eager else default_engine()
        self._keras.opt_state_unbuilt = None  # a new optimizer: a rate set before is gone
        self._keras.lr_schedule = learning_rate_schedule(optimizer, optimizer_kwargs)
        self._keras.compile_kwargs = {
            "tx": tx,
            "loss": loss_obj,
            "train_module": train_module,
            "metrics": metric_list,
            # A jaxnets Loss given as is may score a tuple or dict of outputs itself.
            "loss_reads_outputs": isinstance(compile_utils.one_loss(loss), losses_lib.Loss),
        }
        # What save() writes: names, also for built-in loss and metric objects
        # (losses.get("mse"), metrics.Accuracy()), as Keras serializes its own.
        loss_name = compile_utils.config_name(loss, losses_lib.get)
        metric_names = [
            compile_utils.config_name(m, metrics_lib.get)
            for m in compile_utils.resolve_metrics(metrics, weighted_metrics)
        ]
        serializable = (
            opt_config is not None
            and loss_name is not None
            and None not in metric_names
            and (loss_weights is None or isinstance(loss_weights, int | float))
        )
        self._keras.compile_config = (
            {
                "optimizer": opt_config,
                "loss": loss_name,
                "metrics": metric_names,
                "loss_weights": loss_weights,
                "run_eagerly": bool(eager),
            }
            if serializable
            else None
        )
        if self.state is not None:  # recompiling keeps the weights, resets the optimizer
            self._keras.variables = self.state.variables
            self._keras.state = None
        if self.built or self.default_input() is not None:
            self._ensure_built()

    def _make_state(self, sample=None):
        """The TrainState from the compile() arguments; keeps existing variables if any.

        The train module (final softmax stripped) has the parameters of the
        module, so the state's are exactly those ``build`` would create.
        """
        kw, k = self._keras.compile_kwargs, self._keras
        shape, dtype = k.input_spec
        tx = kw["tx"]
        frozen = self.frozen_patterns()
        if frozen:  # layers with trainable=False: their parameters never change
            from jaxnets.checkpoint import freezing

            labels = lambda params: freezing.param_labels(params, 1.0, freeze=frozen)  # noqa: E731
            tx = optax.partition({"group0": tx, freezing.FROZEN: freezing.frozen()}, labels)
        state = create_train_state(
            kw["train_module"],
            tx,
            jnp.zeros((1, *shape), dtype) if sample is None else sample,
            loss=kw["loss"],
            metrics=kw["metrics"],
            seed=k.seed,
        )
        if k.variables is not None:
            variables = dict(k.variables)
            params = variables.pop("params", {})
            state = state.replace(params=params, model_state=variables, opt_state=tx.init(params))
            k.variables = None
        k.state = with_rate_set_before_build(k, state)

    def _returns_several_outputs(self) -> bool:
        """Whether the module returns a tuple or dict of arrays (traced once, shapes only)."""
        k = self._keras
        if k.several_outputs is None:
            st = self._predict_state()
            shape, dtype = k.input_spec
            kwargs = mode_kwargs(st.call_kwargs, train=False)
            out = jax.eval_shape(
                lambda v: st.apply_fn(v, jnp.zeros((1, *shape), dtype), **kwargs), st.variables
            )
            k.several_outputs = not isinstance(out, jax.ShapeDtypeStruct)
        return k.several_outputs

    def _check_outputs(self, what: str):
        """`ConfigError` before tracing when a module with several outputs meets a loss or
        metrics that read one output array (they would fail inside the step)."""
        kw = self._keras.compile_kwargs
        if not self._returns_several_outputs():
            return
        if not kw["loss_reads_outputs"]:
            raise ConfigError(
                f"{what}(): the module returns several outputs (a tuple or dict), but the loss "
                f"{kw['loss'].name!r} scores one output array (Keras's per-output losses are "
                "not supported). Compile with one jaxnets.losses.Loss whose fn(outputs, "
                "targets) scores them all, with the targets in one array, or return one array."
            )
        if kw["metrics"]:
            names = [m.name for m in kw["metrics"]]
            raise ConfigError(
                f"{what}(): the metrics {names} read one output array, and the module returns "
                "several (a tuple or dict); compile with metrics=[] and compute them from "
                "predict(), which returns every output."
            )

    def _require_compiled(self, what: str):
        if not self.compiled:
            raise ConfigError(f"{what}() needs a compiled model: call model.compile(...) first.")

    # -- weights, summary, saving ---------------------------------------------
    def _variables(self) -> dict:
        self._ensure_built()
        return self.state.variables if self.state is not None else self._keras.variables

    def _set_variables(self, variables: dict):
        if self.state is not None:
            variables = dict(variables)
            self.state = self.state.replace(params=variables.pop("params"), model_state=variables)
        else:
            self._keras.variables = variables

    def get_weights(self) -> list[np.ndarray]:
        """Every variable, layer by layer in Keras's order (`jaxnets.keras.weight_order`):
        ``kernel, bias`` per Dense layer; ``gamma, beta, moving_mean, moving_variance``
        (Flax: scale, bias, mean, var) per BatchNormalization."""
        variables = self._variables()
        return [np.asarray(get_path(variables, p)) for p in keras_paths(variables)]

    def set_weights(self, weights):
        """Replaces the variables with ``weights`` (same order and shapes as `get_weights`)."""
        variables = self._variables()
        paths = keras_paths(variables)
        if len(weights) != len(paths):
            raise ShapeError(f"set_weights needs {len(paths)} arrays, got {len(weights)}.")
        new = []
        for i, (path, w) in enumerate(zip(paths, weights, strict=True)):
            old = get_path(variables, path)
            w = jnp.asarray(w, dtype=old.dtype)
            if w.shape != old.shape:
                raise ShapeError(
                    f"weight {i} ({'/'.join(path)}) must have shape {old.shape}, got {w.shape}."
                )
            new.append(w)
        self._set_variables(with_leaves(variables, paths, new))

    def count_params(self) -> int:
        """Number of scalars in every variable, trainable or not."""
        return int(sum(np.prod(w.shape) for w in jax.tree.leaves(self._variables())))

    def summary(self, print_fn=print, batch_size: int = 1):
        """Prints layers, output shapes, parameter counts, FLOPs and step memory."""
        from jaxnets.keras.summary import summarize

        print_fn(str(summarize(self, batch_size=batch_size)))

    def save(self, path, overwrite: bool = True):
        """Saves architecture (JSON), weights and optimizer state (Orbax) to directory ``path``."""
        from jaxnets.keras.saving import save_model

        save_model(self, path, overwrite=overwrite)

    def save_weights(self, path, overwrite: bool = True):
        """Saves only the variables (Orbax) to directory ``path``."""
        from jaxnets.keras.saving import save_weights

        save_weights(self, path, overwrite=overwrite)

    def load_weights(self, path):
        """Restores variables saved by `save_weights` or `save` into this model."""
        from jaxnets.keras.saving import load_weights

        load_weights(self, path)
