"""What ``Model.compile`` resolves: the optimizer, the loss and the training module.

Keras models often end in ``Dense(10, activation='softmax')`` and train with a
cross-entropy on the probabilities. Taking ``log(softmax(z))`` underflows to
``-inf`` (or, clipped as Keras does, to a wrong finite value) for large logits.
`resolve_loss` therefore strips a final softmax (sigmoid for binary
cross-entropy) from the module used for training and computes the loss from
the logits with ``log_softmax``; the unstripped module still serves
``predict``, so predictions stay probabilities as in Keras.

Example:
  >>> from jaxnets import layers
  >>> from jaxnets.keras import Sequential
  >>> model = Sequential([layers.Dense(3, activation="softmax")])
  >>> loss, train_module = resolve_loss("sparse_categorical_crossentropy", model)
  >>> loss.from_logits, train_module.layers[-1].activation
  (True, None)
"""

from __future__ import annotations

import dataclasses

import jax
import optax

from jaxnets import losses as losses_lib
from jaxnets import metrics as metrics_lib
from jaxnets import optim
from jaxnets.errors import ConfigError, JaxnetsError
from jaxnets.layers import Activation, activations

# Keras's default learning rates (SGD uses 0.01; the adaptive optimizers 1e-3).
_KERAS_DEFAULT_LR = {"sgd": 0.01, "momentum": 0.01, "nesterov": 0.01}
# Keras's argument names for the options `jaxnets.optim.make_optimizer` spells the optax way.
_KERAS_ARG_NAMES = {"beta_1": "b1", "beta_2": "b2", "epsilon": "eps"}
# Which final activation each cross-entropy can absorb into a stable log-likelihood.
_ABSORBS = {"sparse": "softmax", "categorical": "softmax", "binary": "sigmoid"}
_SOFTMAXES = (activations.softmax, jax.nn.softmax)
_SIGMOIDS = (jax.nn.sigmoid,)


def resolve_optimizer(
    optimizer, optimizer_kwargs: dict
) -> tuple[optax.GradientTransformation, dict | None]:
    """Builds the optax transformation; returns it and a JSON config (None if not serializable).

    ``optimizer`` is a name (``'adam'``), a dict ``{'name': 'adam', 'learning_rate': ...}``
    (Keras's ``class_name`` key is accepted too) or an optax transformation.
    """
    if isinstance(optimizer, dict):
        spec = dict(optimizer)
        name = spec.pop("name", None) or spec.pop("class_name", None)
        if not isinstance(name, str):
            raise ConfigError(
                f"an optimizer dict needs a 'name' such as 'adam', got keys {sorted(optimizer)}."
            )
        config = spec.pop("config", None) or {}  # Keras's {'class_name': 'Adam', 'config': {...}}
        return resolve_optimizer(name.lower(), {**spec, **config, **optimizer_kwargs})
    if isinstance(optimizer, str):
        kwargs = {_KERAS_ARG_NAMES.get(k, k): v for k, v in optimizer_kwargs.items()}
        if optimizer.lower() == "sgd" and kwargs.get("momentum"):
            # Keras spells momentum SGD as SGD(momentum=..., nesterov=...).
            optimizer = "nesterov" if kwargs.pop("nesterov", False) else "momentum"
        elif optimizer.lower() == "sgd":
            kwargs.pop("momentum", None)
            kwargs.pop("nesterov", None)
        kwargs.setdefault("learning_rate", _KERAS_DEFAULT_LR.get(optimizer.lower(), 1e-3))
        tx = optim.make_optimizer(optimizer, **kwargs)
        config = {"name": optimizer, **kwargs}
        return tx, (config if _is_json_plain(config) else None)
    if isinstance(optimizer, optax.GradientTransformation):
        if optimizer_kwargs:
            raise ConfigError(
                f"optimizer options {sorted(optimizer_kwargs)} apply to optimizer names only; "
                "an optax transformation is already configured."
            )
        return optimizer, None
    raise ConfigError(
        "optimizer must be a name such as 'adam', a dict {'name': 'adam', 'learning_rate': 1e-3} "
        f"or an optax.GradientTransformation, got {type(optimizer).__name__}."
    )


def _is_json_plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json_plain(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_is_json_plain(v) for v in value)
    return value is None or isinstance(value, bool | int | float | str)


def final_activation(module) -> str | None:
    """``'softmax'`` or ``'sigmoid'`` if a `Sequential` ends with that activation, else None."""
    layers = getattr(module, "layers", None)
    if not isinstance(layers, tuple) or not layers:
        return None
    act = getattr(layers[-1], "activation", None)
    if isinstance(act, str):
        return act.lower() if act.lower() in ("softmax", "sigmoid") else None
    if any(act is f for f in _SOFTMAXES):
        return "softmax"
    if any(act is f for f in _SIGMOIDS):
        return "sigmoid"
    return None


def strip_final_activation(module):
    """The `Sequential` without its last activation (same parameters, outputs logits)."""
    last = module.layers[-1]
    if isinstance(last, Activation):
        new_layers = module.layers[:-1]
    else:
        new_layers = (*module.layers[:-1], last.clone(activation=None))
    return module.clone(layers=new_layers)


@dataclasses.dataclass(frozen=True)
class WeightedLoss(losses_lib.Loss):
    """A `jaxnets.losses.Loss` scaled by Keras's ``loss_weights``."""

    weight: float = 1.0

    def __call__(self, outputs, targets):
        return self.weight * super().__call__(outputs, targets)


def resolve_loss(loss, module) -> tuple[losses_lib.Loss, object]:
    """Returns ``(loss, train_module)``.

    A custom callable is a Keras loss ``fn(y_true, y_pred)`` (`keras_loss_function`).
    A cross-entropy (by name, or a `Loss` of that kind) meeting a final
    softmax/sigmoid of a `Sequential` is computed from logits and the
    activation is stripped from ``train_module``. Otherwise model outputs are
    taken as logits (the jaxnets convention for classifiers) and
    ``train_module`` is ``module``.
    """
    if loss is None:
        raise ConfigError("compile() needs a loss, e.g. loss='sparse_categorical_crossentropy'.")
    loss = one_loss(loss)
    if callable(loss) and not isinstance(loss, losses_lib.Loss):
        loss = keras_loss_function(loss)
    loss_obj = losses_lib.get(loss)
    act = final_activation(module)
    if act is not None and _ABSORBS.get(loss_obj.kind) == act:
        return dataclasses.replace(loss_obj, from_logits=True), strip_final_activation(module)
    if act is not None and isinstance(loss, str) and loss_obj.kind in _ABSORBS:
        # A named cross-entropy reads probabilities in Keras (from_logits=False); a
        # final activation it cannot absorb (softmax before binary_crossentropy)
        # leaves the outputs probabilities, not logits.
        return dataclasses.replace(loss_obj, from_logits=False), module
    return loss_obj, module


def one_loss(loss):
    """The loss of Keras's one-output forms: ``[loss]`` or ``{"output_name": loss}``.

    Keras's per-output losses (a list or dict of several) have no counterpart:
    `jaxnets.Model` trains one output array with one loss.

    Example:
      >>> one_loss({"out": "mse"}), one_loss(["mae"]), one_loss("huber")
      ('mse', 'mae', 'huber')
    """
    if not isinstance(loss, list | tuple | dict):
        return loss
    if len(loss) == 1:
        return next(iter(loss.values())) if isinstance(loss, dict) else loss[0]
    given = f"a dict with keys {sorted(loss)}" if isinstance(loss, dict) else f"{len(loss)} losses"
    raise ConfigError(
        f"jaxnets.Model trains one output with one loss, got {given} (Keras's per-output "
        "losses are not supported); for several outputs pass one jaxnets.losses.Loss whose "
        "fn(outputs, targets) scores them all, with the targets in one array."
    )


def keras_loss_function(fn) -> losses_lib.Loss:
    """A Keras custom loss ``fn(y_true, y_pred)`` as a jaxnets `Loss` (called ``(outputs, targets)``).

    As Keras's ``LossFunctionWrapper`` does, the targets are cast to the outputs'
    float dtype and a last axis of size 1 is squeezed or added so both have the
    same rank. A loss that returns one number for the batch (its mean) is
    evaluated row by row instead, so that the padding rows of a last partial
    batch and sample weights can be left out, as for the built-in losses.

    Example:
      >>> import jax.numpy as jnp
      >>> pinball = lambda y_true, y_pred: jnp.maximum(0.9 * (y_true - y_pred), -0.1 * (y_true - y_pred))
      >>> loss = keras_loss_function(pinball)
      >>> per = loss(jnp.zeros((2, 1)), jnp.array([1.0, -1.0]))  # (outputs, targets): under, over
      >>> per.shape, [round(v, 4) for v in per[:, 0].tolist()]
      ((2, 1), [0.9, 0.1])
      >>> keras_loss_function(lambda t, p: jnp.mean((t - p) ** 2))(jnp.zeros((2, 1)), jnp.array([1.0, 3.0])).tolist()
      [1.0, 9.0]
    """
    import jax.numpy as jnp

    def call(outputs, targets):
        y_pred, y_true = outputs, jnp.asarray(targets)
        if jnp.issubdtype(y_pred.dtype, jnp.floating):
            y_true = y_true.astype(y_pred.dtype)
        if y_pred.ndim == y_true.ndim + 1 and y_pred.shape[-1] == 1:
            y_true = y_true[..., None] if y_true.ndim == 1 else y_true
            y_pred = y_pred if y_true.ndim == y_pred.ndim else y_pred[..., 0]
        elif y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1] == 1:
            y_pred = y_pred[..., None] if y_pred.ndim == 1 else y_pred
            y_true = y_true if y_true.ndim == y_pred.ndim else y_true[..., 0]
        per = fn(y_true, y_pred)
        if jnp.ndim(per) == 0:
            per = jax.vmap(lambda t, p: fn(t[None], p[None]))(y_true, y_pred)
        return per

    return losses_lib.Loss(fn=call, kind="regression", name=getattr(fn, "__name__", "loss"))


def apply_loss_weights(loss: losses_lib.Loss, loss_weights) -> losses_lib.Loss:
    """Scales ``loss`` by Keras's ``loss_weights`` (a number or a one-element list/dict)."""
    if loss_weights is None:
        return loss
    if isinstance(loss_weights, dict):
        loss_weights = list(loss_weights.values())
    if isinstance(loss_weights, list | tuple):
        if len(loss_weights) != 1:
            raise ConfigError(f"single-output models take one loss weight, got {loss_weights}.")
        loss_weights = loss_weights[0]
    fields = {f.name: getattr(loss, f.name) for f in dataclasses.fields(losses_lib.Loss)}
    return WeightedLoss(**fields, weight=float(loss_weights))


def config_name(obj, get) -> str | None:
    """The name that ``get`` turns back into ``obj`` (a name is its own), or None.

    Example:
      >>> from jaxnets import metrics
      >>> config_name(metrics.Accuracy(), metrics.get), config_name("mse", metrics.get)
      ('accuracy', 'mse')
      >>> config_name(metrics.Accuracy(name="hits"), metrics.get) is None  # no such name
      True
    """
    if isinstance(obj, str):
        return obj
    name = getattr(obj, "name", None)
    if not isinstance(name, str):
        return None
    try:
        built_in = get(name)
    except JaxnetsError:  # not a built-in name
        return None
    # `resolve_metrics` renames get("AUC") (logged "auc") to "AUC", as Keras logs it.
    if built_in == obj or _renamed(built_in, name) == obj:
        return name
    return None


def _renamed(obj, name: str):
    """``obj`` logged under ``name``: a copy when it is a dataclass with another name."""
    if dataclasses.is_dataclass(obj) and getattr(obj, "name", name) != name:
        return dataclasses.replace(obj, name=name)
    return obj


def resolve_metrics(metrics, weighted_metrics, loss_kind: str | None = None) -> list:
    """Keras's ``metrics`` plus ``weighted_metrics``, without duplicates, in order.

    jaxnets metrics always use the sample weights when a batch has them, so
    both lists end up weighted (Keras leaves plain ``metrics`` unweighted).
    With a binary loss, ``"precision"``, ``"recall"`` and ``"f1"`` are the
    positive class's, as Keras's (and scikit-learn's) defaults are for a
    binary classifier, still logged under the name given; with several
    sigmoid outputs (multi-label) they count every label, and ``"accuracy"``
    compares the arg-max label, as Keras's do (``"binary_accuracy"`` counts
    every label).

    A metric given by name is logged under that exact spelling, as in Keras
    (``"AUC"`` logs as ``AUC``, ``"acc"`` as ``acc``).

    Example:
      >>> [(m.name, type(m).__name__) for m in resolve_metrics(["AUC", "mse"], None)]
      [('AUC', 'AUC'), ('mse', 'MeanError')]
      >>> [getattr(m, "average", None) for m in resolve_metrics(["accuracy", "precision"], None, "binary")]
      [None, 'binary']
    """
    out, seen = [], set()
    given = [*_metric_list(metrics, "metrics"), *_metric_list(weighted_metrics, "weighted_metrics")]
    for m in given:
        key = m.lower() if isinstance(m, str) else id(m)
        if key not in seen:
            seen.add(key)
            if loss_kind == "binary" and key in ("precision", "recall", "f1"):
                m = metrics_lib.PrecisionRecallF1(key, average="binary", name=m)
            elif loss_kind == "binary" and key in ("accuracy", "acc"):
                # Keras reads "accuracy" on K > 1 sigmoid outputs as categorical_accuracy.
                m = metrics_lib.Accuracy(name=m, multi_label="argmax")
            elif isinstance(m, str):
                m = _renamed(metrics_lib.get(m), m)
            out.append(m)
    return out


def _metric_list(value, arg: str) -> list:
    """``metrics=`` as a list: a one-output dict gives its entry, a bare name is an error.

    A bare string would otherwise be read letter by letter (``'a'``, ``'c'``...).
    """
    if value is None:
        return []
    if isinstance(value, dict):
        if len(value) != 1:
            raise ConfigError(
                f"single-output models take one {arg} entry, got a dict with keys {sorted(value)}."
            )
        (value,) = value.values()
        return value if isinstance(value, list | tuple) else [value]
    if not isinstance(value, list | tuple):
        raise ConfigError(
            f"{arg} must be a list such as [{value!r}], got {type(value).__name__} {value!r}."
        )
    return list(value)
