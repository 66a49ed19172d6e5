"""Keras's loops on a `jaxnets.keras.Model`: fit, evaluate, predict and the on-batch calls.

Each loop is a thin adapter: it turns Keras's arguments into the batch dicts
of `jaxnets.training` (see `jaxnets.keras.data_adapter`) and calls the
functional `fit`, `evaluate` or `predict` on ``model.state``. Kept apart from
`jaxnets.keras.model` only to keep files short; `Model` inherits these methods.

Example:
  >>> import numpy as np, flax.linen as nn
  >>> from jaxnets.keras import Model
  >>> model = Model(nn.Dense(2))
  >>> model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
  >>> x, y = np.zeros((4, 3), np.float32), np.array([0, 1, 0, 1])
  >>> model.evaluate(x, y, verbose=0)  # [loss, accuracy]: ln 2 and a coin flip at init
  [0.6931..., 0.5]
  >>> model.evaluate(x, y, verbose=0, return_dict=True)
  {'loss': 0.6931..., 'accuracy': 0.5}
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnets import losses as losses_lib
from jaxnets import metrics as metrics_lib
from jaxnets import training as training_lib
from jaxnets.callbacks.base import Callback, CallbackList
from jaxnets.callbacks.logging import ProgBar
from jaxnets.callbacks.misc import History
from jaxnets.data.batching import pad_to
from jaxnets.errors import ConfigError
from jaxnets.keras import data_adapter
from jaxnets.training import loop as training_loop
from jaxnets.training.engine import resolve_engine
from jaxnets.training.state import ModuleApply, TrainState, accepted_call_kwargs, mode_kwargs

# Keras fit() arguments with no counterpart here: refused by name rather than by
# the TypeError of an unexpected keyword.
_KERAS_FIT_ARGS_NOT_SUPPORTED = frozenset(
    {
        "validation_freq",
        "max_queue_size",
        "workers",
        "use_multiprocessing",
    }
)


def _own_batch_hook(callbacks) -> bool:
    """Whether a callback of the user's own has an ``on_train_batch_end``.

    jaxnets' callbacks work with batch logs every ``log_every`` steps; a user's
    Keras callback (a class of theirs, or a `LambdaCallback` given that hook)
    expects one call per batch, as Keras makes.
    """
    own = [
        c
        for c in callbacks
        if "on_train_batch_end" in vars(c) or not type(c).__module__.startswith("jaxnets.")
    ]
    return training_loop.wants_batch_logs(own)


class _KerasParams(Callback):
    """Puts ``fit``'s own ``verbose`` into the params every callback sees (Keras's ``set_params``).

    ``Model.fit`` runs the functional loop silently (``verbose=0``: its `ProgBar`
    draws instead), and that loop hands one params dict to all the callbacks;
    this last one writes the user's ``verbose`` into it before training starts.
    """

    def __init__(self, verbose):
        super().__init__()
        self.verbose = verbose

    def set_params(self, params: dict):
        params["verbose"] = self.verbose
        super().set_params(params)


def _steps(arrays: dict, batch_size: int) -> int:
    return -(-len(arrays["x"]) // batch_size)


def _check_optional_count(name: str, value):
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0
    ):
        raise ConfigError(f"{name} must be a positive integer or None, got {value!r}.")


def _first_batches(arrays: dict, steps, batch_size: int) -> dict:
    """The rows of the first ``steps`` batches (all of them for None), as Keras's
    ``evaluate(steps=)`` and ``predict(steps=)`` take from arrays."""
    _check_optional_count("steps", steps)
    if steps is None:
        return arrays
    return {k: v[: steps * batch_size] for k, v in arrays.items()}


def _eval_params(verbose, arrays: dict, batch_size: int) -> dict:
    """The params Keras gives the callbacks of ``evaluate`` and ``predict``."""
    return {"verbose": verbose, "epochs": 1, "steps": _steps(arrays, batch_size)}


class Loops:
    """fit / evaluate / predict / *_on_batch, mixed into `jaxnets.keras.Model`."""

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_split=0.0,
        validation_data=None,
        shuffle=True,
        class_weight=None,
        sample_weight=None,
        initial_epoch=0,
        steps_per_epoch=None,
        validation_steps=None,
        validation_batch_size=None,
        *,
        log_every: int | None = None,
        **fit_kwargs,
    ):
        """Trains for ``epochs`` epochs (Keras ``fit``); returns a `History`.

        Metrics are fetched from the device every ``log_every`` steps and at
        epoch ends, which is when batch-level callbacks run. By default that is
        every 50 steps, or every step when one of ``callbacks`` has its own
        ``on_train_batch_end`` (as Keras calls it after each batch; each call
        then waits for its step to finish). Other keyword
        arguments go to `jaxnets.training.fit` (e.g. ``workdir=`` to checkpoint
        and resume the run); ``devices=`` (a count or a list) or ``mesh=`` make
        the model data-parallel (jit + NamedSharding, `jaxnets.parallel`).

        ``validation_steps`` validates on the first that many batches of
        ``validation_batch_size`` (default ``batch_size``) rows, as Keras does;
        the validation itself runs in batches of ``batch_size`` (its masked
        means do not depend on the batch size).
        """
        self._require_compiled("fit")
        unsupported = sorted(set(fit_kwargs) & _KERAS_FIT_ARGS_NOT_SUPPORTED)
        if unsupported:
            raise ConfigError(
                f"fit() does not support Keras's {', '.join(unsupported)}: validation runs at "
                "every epoch's end."
            )
        if log_every is None:
            log_every = 1 if _own_batch_hook(callbacks or ()) else 50
        devices, mesh = fit_kwargs.pop("devices", None), fit_kwargs.pop("mesh", None)
        if devices is not None or mesh is not None:
            # Data-parallel from here on: evaluate and predict use the same engine.
            self._keras.engine = resolve_engine(None, devices, mesh)
        arrays, bs, can_shuffle = data_adapter.prepare(
            x, y, sample_weight, None, steps_per_epoch, batch_size or 32
        )
        for name, value in (
            ("validation_steps", validation_steps),
            ("validation_batch_size", validation_batch_size),
        ):
            _check_optional_count(name, value)
        val = None
        if validation_data is not None:
            val = self._validation_arrays(validation_data, validation_steps)
        elif validation_split:
            if not can_shuffle:
                raise ConfigError("validation_split needs arrays; pass validation_data instead.")
            arrays, val = data_adapter.split_validation(arrays, validation_split)
        if validation_steps is not None and not data_adapter.is_batch_iterable(validation_data):
            # Keras validates on the first validation_steps batches of arrays.
            rows = validation_steps * (validation_batch_size or bs)
            val = None if val is None else {k: v[:rows] for k, v in val.items()}
        # After the split: as in Keras, class weights weigh the training rows only.
        arrays = data_adapter.add_class_weight(arrays, class_weight)
        later_epochs = data_adapter.fresh_epochs(x, steps_per_epoch, bs)
        if later_epochs is not None:  # a generator: new batches each epoch, as in Keras

            def epoch_data(epoch, read=later_epochs):
                return self._masked_steps(data_adapter.add_class_weight(read(epoch), class_weight))

            fit_kwargs["epoch_data"] = epoch_data
        self._ensure_built(arrays["x"][:1])
        self._check_outputs("fit")
        arrays, val = self._masked_steps(arrays), self._masked_steps(val)
        history = History()
        cbs = [*(callbacks or []), history]
        if verbose:
            cbs.append(ProgBar(verbose))
        cbs.append(_KerasParams(verbose))  # last: the indices of checkpointed states stay put
        state, _ = training_lib.fit(
            self.state,
            arrays,
            epochs=epochs,
            batch_size=bs,
            validation_data=val,
            shuffle=bool(shuffle) and can_shuffle,
            seed=self._shuffle_seed(),
            callbacks=cbs,
            verbose=0,
            log_every=log_every,
            initial_epoch=initial_epoch,
            engine=self._keras.engine,
            callback_model=self,
            **fit_kwargs,
        )
        self.state = state
        self.history = history
        return history

    def _shuffle_seed(self) -> int:
        """The model's seed for its first fit, a new one derived from it for each later fit.

        `jaxnets.training.fit` orders epoch ``e`` by ``(seed, e)`` with epochs counted
        from 0 in each call, so a loop of ``fit(x, y, epochs=1)`` calls would replay one
        order; Keras reshuffles on every call. A rerun of the same script (a resumed
        ``workdir`` run) makes the same calls and gets the same orders.
        """
        calls, self._keras.fit_calls = self._keras.fit_calls, self._keras.fit_calls + 1
        if calls == 0:
            return self.seed
        return int(np.random.SeedSequence([self.seed, calls]).generate_state(1)[0] >> 1)

    def _masked_steps(self, arrays):
        """``arrays`` with ``x_mask = x != 0`` when the outputs carry an ``Embedding(mask_zero=True)``
        mask: Keras leaves those steps out of the loss and metrics, and so does the step here."""
        if arrays is None or "x_mask" in arrays or not self._output_keeps_mask():
            return arrays
        return {**arrays, "x_mask": np.asarray(arrays["x"]) != 0}

    def _output_keeps_mask(self) -> bool:
        k = self._keras
        if k.output_masked is None:
            layers = getattr(self.module, "layers", None)
            if not layers or not getattr(layers[0], "mask_zero", False):
                k.output_masked = False
            else:
                shape, dtype = k.input_spec

                def apply(v, x):
                    return self.module.apply(v, x, mutable=["intermediates"])[1]

                sown = jax.eval_shape(apply, self._variables(), jnp.zeros((1, *shape), dtype))
                k.output_masked = "output_mask" in sown.get("intermediates", {})
        return k.output_masked

    def _validation_arrays(self, data, steps=None):
        if data_adapter.is_batch_iterable(data):
            return data_adapter.from_batches(data, steps)[0]
        if isinstance(data, tuple | list) and 2 <= len(data) <= 3:
            return data_adapter.from_arrays(*data)
        return data_adapter.from_arrays(data)

    def _format(self, logs: dict, return_dict: bool):
        ordered = {k: logs[k] for k in self.metrics_names if k in logs}
        if return_dict:
            return ordered
        values = list(ordered.values())
        return values[0] if len(values) == 1 else values

    def evaluate(
        self,
        x=None,
        y=None,
        batch_size=None,
        verbose="auto",
        sample_weight=None,
        steps=None,
        callbacks=None,
        return_dict=False,
    ):
        """Loss and metrics (Keras ``evaluate``): the loss alone without metrics,
        else ``[loss, *metrics]``; a dict with ``return_dict=True``. ``steps``
        evaluates the first that many batches only (of arrays too, as in Keras)."""
        self._require_compiled("evaluate")
        batches = data_adapter.is_batch_iterable(x)
        arrays, bs, _ = data_adapter.prepare(
            x, y, sample_weight, None, steps if batches else None, batch_size or 32
        )
        if not batches:
            arrays = _first_batches(arrays, steps, bs)
        self._ensure_built(arrays["x"][:1])
        self._check_outputs("evaluate")
        arrays = self._masked_steps(arrays)
        cbs = CallbackList(callbacks, model=self, params=_eval_params(verbose, arrays, bs))
        cbs.on_test_begin()
        logs = training_lib.evaluate(self.state, arrays, batch_size=bs, engine=self._keras.engine)
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in self._format(logs, True).items()))
        cbs.on_test_end(logs)
        return self._format(logs, return_dict)

    def _predict_state(self) -> TrainState:
        if self.state is not None:
            return self.state.replace(apply_fn=ModuleApply(self.module))
        variables = dict(self._keras.variables)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=variables.pop("params", {}),
            model_state=variables,
            opt_state=(),
            rng=jax.random.key(0),
            skipped=jnp.zeros((), jnp.int32),
            apply_fn=ModuleApply(self.module),
            tx=optax.identity(),
            loss=losses_lib.get("mse"),
            call_kwargs=accepted_call_kwargs(self.module),
        )

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Model outputs as numpy (probabilities after a final softmax, as in Keras).

        ``callbacks`` get ``on_predict_begin`` and ``on_predict_end``; there are no
        per-batch predict hooks (the batches run without a host sync). ``verbose``
        is accepted for Keras scripts; predict prints nothing. ``steps`` predicts
        the first that many batches only (of arrays too, as in Keras).
        """
        if data_adapter.is_batch_iterable(x):
            arrays, bs = data_adapter.from_batches(x, steps)
            keep = arrays["mask"] > 0
        else:
            bs, keep = batch_size or 32, None
            arrays = _first_batches(data_adapter.from_arrays(x), steps, bs)
        self._ensure_built(arrays["x"][:1])
        cbs = CallbackList(callbacks, model=self, params=_eval_params(verbose, arrays, bs))
        cbs.on_predict_begin()
        out = training_lib.predict(
            self._predict_state(),
            arrays["x"],
            batch_size=bs,
            engine=self._keras.engine,
            x_mask=arrays.get("x_mask"),
        )
        out = out if keep is None else out[keep]
        cbs.on_predict_end()
        return out

    def _one_batch(self, x, y, sample_weight=None, class_weight=None):
        arrays = data_adapter.add_class_weight(
            data_adapter.from_arrays(x, y, sample_weight), class_weight
        )
        self._ensure_built(arrays["x"][:1])
        arrays = self._masked_steps(arrays)
        return self._keras.engine.place_batch(pad_to(arrays, len(arrays["x"])))

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """One optimizer step on one batch; returns that batch's loss (and metrics)."""
        self._require_compiled("train_on_batch")
        batch = self._one_batch(x, y, sample_weight, class_weight)
        self._check_outputs("train_on_batch")
        step = self._keras.engine.compile(training_lib.train_step, donate_argnums=(0,))
        self.state, sums = step(self.state, batch)
        return self._format(metrics_lib.compute_all(self.state.metric_table, sums), return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        """Loss (and metrics) of one batch in inference mode."""
        self._require_compiled("test_on_batch")
        batch = self._one_batch(x, y, sample_weight)
        self._check_outputs("test_on_batch")
        sums = self._keras.engine.compile(training_lib.eval_step)(self.state, batch)
        return self._format(metrics_lib.compute_all(self.state.metric_table, sums), return_dict)

    def predict_on_batch(self, x):
        """Outputs for one batch, as numpy."""
        batch = self._one_batch(x, None)
        step = self._keras.engine.compile(training_lib.predict_step)
        # Every output of a module returning a tuple or dict, as predict() gives them.
        return jax.tree.map(np.asarray, step(self._predict_state(), batch))

    def __call__(self, x, training: bool = False):
        """Applies the model eagerly (Keras ``model(x)``)."""
        if training:
            raise ConfigError("model(x, training=True) is not supported; use fit or train_step.")
        self._ensure_built(np.asarray(x)[:1])
        st = self._predict_state()
        kwargs = mode_kwargs(st.call_kwargs, train=False)
        return st.apply_fn(st.variables, x, **kwargs)
