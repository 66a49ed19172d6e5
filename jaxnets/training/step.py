"""Pure training, evaluation and prediction steps.

Each step is a plain function of the state and a batch; callers apply
``jax.jit`` (with ``donate_argnums=0`` for the train step), ``jax.vmap`` or
shardings where they call it. A batch is a dict: ``x`` inputs, ``y`` targets,
``mask`` `(B,)` with 1.0 for real rows and 0.0 for padding, optional
``weight`` `(B,)` sample weights and optional ``x_mask`` `(B, T)` passed to the
model as ``mask=``. Losses are masked sums divided by the number of real rows,
so a padded batch gives exactly the numbers of the unpadded one.

Example:
  >>> import jax, jax.numpy as jnp
  >>> import flax.linen as nn
  >>> from jaxnets.training import create_train_state, train_step
  >>> state = create_train_state(nn.Dense(2), "sgd", jnp.zeros((1, 3)), learning_rate=0.1)
  >>> batch = {"x": jnp.ones((4, 3)), "y": jnp.array([0, 1, 1, 0]), "mask": jnp.ones(4)}
  >>> state, sums = jax.jit(train_step)(state, batch)
  >>> int(state.step), float(sums["loss"]["count"])
  (1, 4.0)
"""

from __future__ import annotations

import contextlib
import sys

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxnets import precision, regularizers
from jaxnets.errors import ConfigError
from jaxnets.training.state import TrainState, mode_kwargs


def model_kwargs(state: TrainState, batch: dict, train: bool) -> dict:
    """Keyword arguments for ``apply_fn``: the mode and ``mask`` where the module takes them.

    The mode is ``train``, ``training`` or ``deterministic`` (inverted), whichever
    the module names (see `jaxnets.training.state.mode_kwargs`).
    """
    kwargs = mode_kwargs(state.call_kwargs, train)
    if "x_mask" in batch and "mask" in state.call_kwargs:
        kwargs["mask"] = batch["x_mask"]  # a model without mask= still gets it in its loss
    return kwargs


def _row_weights(batch):
    mask = batch["mask"].astype(jnp.float32)
    if "weight" in batch:
        return mask * batch["weight"].astype(jnp.float32)
    return mask


def per_example_loss(state: TrainState, outputs, targets, step_mask=None, row_mask=None):
    """The loss of each row `(B,)`.

    Per-step losses of sequences `(B, T)` are averaged over the valid steps
    (``step_mask``, the batch's ``x_mask``, where given). With ``row_mask``
    (the batch's ``mask`` of real rows) each row is then scaled by its share
    of the batch's valid steps, so that the mean over the real rows is the
    mean over all their valid steps: every valid step weighs the same, as in
    Keras (a masked loss) and PyTorch (``ignore_index``), not every row.
    """
    per = state.loss(outputs, targets)
    _check_per_example(state, per, targets)
    if per.ndim == 1:
        return per
    per = per.reshape(per.shape[0], -1)
    if step_mask is None or step_mask.shape != per.shape:
        return per.mean(axis=-1)
    m = step_mask.astype(per.dtype)
    valid = jnp.sum(m, axis=-1)
    row_mean = jnp.sum(per * m, axis=-1) / jnp.maximum(valid, 1.0)
    if row_mask is None:
        return row_mean
    real = row_mask.astype(per.dtype)
    return row_mean * valid * jnp.sum(real) / jnp.maximum(jnp.sum(valid * real), 1.0)


def _check_per_example(state, per, targets):
    """`ConfigError` unless the loss gave one value per example.

    Shapes are static, so this runs once, while tracing; without it a custom
    loss returning the batch mean fails later with an IndexError or a broadcast error.
    """
    leaves = [t for t in jax.tree.leaves(targets) if getattr(t, "ndim", 0) >= 1]
    rows = leaves[0].shape[0] if leaves else None
    shape = tuple(getattr(per, "shape", ()))
    if not shape or (rows is not None and shape[0] != rows):
        name = getattr(state.loss, "name", "loss")
        batch = "" if rows is None else f" for a batch of {rows} rows"
        raise ConfigError(
            f"loss {name} must return one value per example, shape (batch,) or "
            f"(batch, ...){batch}, but got shape {shape}; do not average over the batch "
            "(the training step masks padded rows and applies sample weights first)."
        )


def _per_step(preds, labels, weights, step_mask):
    """Flattens per-step predictions `(B, T, C)` so metrics count every valid step."""
    b, t = labels.shape[:2]
    w = jnp.broadcast_to(weights[:, None], (b, t))
    if step_mask is not None and step_mask.shape == (b, t):
        w = w * step_mask.astype(w.dtype)
    return (
        preds.reshape(b * t, *preds.shape[2:]),
        labels.reshape(b * t, *labels.shape[2:]),
        w.reshape(-1),
    )


def penalty(params, l1: float, l2: float):
    """``l1 * sum|w| + l2 * sum w^2`` over parameters with two or more axes."""
    total = jnp.zeros((), jnp.float32)
    if not (l1 or l2):
        return total
    for w in jax.tree.leaves(params):
        if w.ndim >= 2:
            if l1:
                total += l1 * jnp.sum(jnp.abs(w))
            if l2:
                total += l2 * jnp.sum(jnp.square(w))
    return total


def metric_sums(state: TrainState, outputs, batch, per_example, reg=0.0):
    """The accumulators of one batch: the loss sums plus each metric's sums."""
    weights = _row_weights(batch)
    count = jnp.sum(batch["mask"].astype(jnp.float32))
    sums = {"loss": {"total": jnp.sum(per_example * weights) + reg * count, "count": count}}
    if state.metrics:
        preds = state.loss.predictions(outputs)
        labels = state.loss.labels(batch["y"])
        if state.loss.kind in ("sparse", "categorical") and preds.ndim == 3:
            preds, labels, weights = _per_step(preds, labels, weights, batch.get("x_mask"))
        elif state.loss.kind == "regression" and preds.ndim == 3 and "x_mask" in batch:
            # Per-step regression outputs (B, T, K): the metrics skip masked steps, as the loss does.
            labels = labels.reshape(preds.shape)
            preds, labels, weights = _per_step(preds, labels, weights, batch["x_mask"])
        for m in state.metrics:
            sums[m.name] = m.update(preds, labels, weights)
    return sums


def _injected(hparams):
    """`jaxnets.layers.hyperparams.inject` of the state's model hyperparameters, if any."""
    if not hparams:
        return contextlib.nullcontext()
    # Imported here: jaxnets.layers costs ~30 ms to import, and a plain Flax model never needs it.
    from jaxnets.layers import hyperparams

    return hyperparams.inject(hparams)


def _real_rows(mask):
    """`jaxnets.layers.replicas.real_rows` of the batch mask, so BatchNorm skips padding rows.

    Only jaxnets' `BatchNormalization` reads it, and its module imports
    ``replicas``: when that is not loaded no layer can read it, and a plain Flax
    model does not pay for importing `jaxnets.layers` (~20 ms).
    """
    replicas = sys.modules.get("jaxnets.layers.replicas")
    return contextlib.nullcontext() if replicas is None else replicas.real_rows(mask)


def loss_and_updates(params, state: TrainState, batch, key):
    """Mean masked loss of a batch (for ``jax.grad``), with outputs and new model state.

    The model runs inside `jaxnets.layers.replicas.real_rows` of ``batch['mask']``,
    so jaxnets' BatchNorm takes its statistics over the real rows only.
    """
    # 'losses': the layers' weight penalties (Keras regularizers), added to the loss below.
    mutable = [*state.model_state, regularizers.COLLECTION]
    # Mixed precision: compute in half precision, hand float32 to the loss and the state.
    compute_params, x = precision.cast_to_compute(state.precision, (params, batch["x"]))
    with _injected(state.hparams), _real_rows(batch["mask"]):
        out = state.apply_fn(
            {"params": compute_params, **state.model_state},
            x,
            rngs={"dropout": key},
            mutable=mutable,
            **model_kwargs(state, batch, train=True),
        )
    outputs, new_model_state = out
    new_model_state = dict(new_model_state)
    layer_penalty = regularizers.total(new_model_state.pop(regularizers.COLLECTION, {}))
    outputs = precision.cast_to_float32(outputs)
    new_model_state = precision.cast_like(dict(new_model_state), state.model_state)
    per_example = per_example_loss(state, outputs, batch["y"], batch.get("x_mask"), batch["mask"])
    count = jnp.maximum(jnp.sum(batch["mask"].astype(jnp.float32)), 1.0)
    reg = penalty(params, state.l1, state.l2) + layer_penalty
    loss = jnp.sum(per_example * _row_weights(batch)) / count + reg
    return loss, (outputs, dict(new_model_state), per_example, reg)


def all_finite(tree, loss) -> jax.Array:
    """True iff ``loss`` and every float in ``tree`` are finite (no inf, no NaN).

    Each matrix is multiplied by a zero vector: a product of only finite
    values is 0, and one inf or NaN makes it NaN. A matrix-vector product runs
    about 2x faster on XLA:CPU than ``jnp.all(jnp.isfinite(x))``, which writes
    a boolean array and reduces it in two more passes. The zero is ``0 * loss``
    so that XLA cannot fold the product away as a constant (a NaN loss makes it
    NaN, which is the right answer anyway).

    Example:
      >>> all_finite({"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}, jnp.float32(1.0))
      Array(True, dtype=bool)
      >>> all_finite({"w": jnp.ones((3, 2)).at[1, 0].set(jnp.inf)}, jnp.float32(1.0))
      Array(False, dtype=bool)
    """
    zero = jnp.zeros((), jnp.float32) * loss
    total = zero
    for x in jax.tree.leaves(tree):
        if not jnp.issubdtype(x.dtype, jnp.inexact) or x.size == 0:
            # Integer leaves (float0 cotangents) cannot hold inf or NaN, nor can empty
            # ones, whose (-1, 0) reshape below would fail while tracing.
            continue
        if x.ndim >= 2:
            column = jnp.broadcast_to(zero.astype(x.dtype), (x.shape[-1],))
            check = jnp.sum(x.reshape(-1, x.shape[-1]) @ column)
        else:
            check = jnp.sum(x * 0)
        total = total + jnp.abs(check).astype(jnp.float32)  # abs: a complex NaN stays NaN
    return jnp.isfinite(total)


def apply_gradients(state: TrainState, grads, loss, new_model_state) -> TrainState:
    """The optimizer update that ends `train_step`, given the gradients and the loss.

    If ``loss`` or any gradient is not finite the parameters, model state and
    optimizer state are kept bitwise unchanged and ``state.skipped`` counts it;
    the check runs on the device, without a host sync. Steps that compute
    gradients their own way (data-parallel ones in `jaxnets.parallel`) end with it.
    """
    finite = all_finite(grads, loss)

    def update(_):
        updates, new_opt_state = state.tx.update(grads, state.opt_state, state.params)
        return optax.apply_updates(state.params, updates), new_model_state, new_opt_state

    def keep(_):
        return state.params, state.model_state, state.opt_state

    # A branch, not a `jnp.where` per leaf: a finite step (nearly every step) then
    # skips a select pass over params and optimizer state (8-15% more MLP steps/s
    # on CPU, measured interleaved). Under vmap (populations) it becomes that select.
    params, model_state, opt_state = lax.cond(finite, update, keep, None)
    return state.replace(
        step=state.step + 1,
        params=params,
        model_state=model_state,
        opt_state=opt_state,
        skipped=state.skipped + (~finite).astype(jnp.int32),
        loss_scale=precision.adjust(state.loss_scale, finite),
    )


def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    """One optimizer step on a batch; returns the new state and the batch's metric sums.

    If the loss or any gradient is not finite the update is skipped (see
    `apply_gradients`).

    Args:
      state: the `TrainState` (unchanged: the new one is returned).
      batch: ``x``, ``y`` and ``mask`` (1.0 for real rows, 0.0 for padding),
        optionally ``weight`` and ``x_mask`` (see this module's docstring).

    Returns:
      ``(new_state, sums)``: the state after one step, and the batch's metric
      accumulators (``loss`` and each metric's sums over the real rows).

    Example:
      >>> import jax, numpy as np, flax.linen as nn
      >>> from jaxnets.training import create_train_state, train_step
      >>> x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
      >>> y = (x[:, 0] > 0).astype(np.int32)
      >>> state = create_train_state(nn.Dense(2), "adam", x[:1], learning_rate=0.1)
      >>> batch = {"x": x[:4], "y": y[:4], "mask": np.array([1, 1, 1, 0], np.float32)}
      >>> new, sums = jax.jit(train_step)(state, batch)  # the last row is padding
      >>> int(state.step), int(new.step), sorted(sums), float(sums["loss"]["count"])
      (0, 1, ['accuracy', 'loss'], 3.0)
    """
    key = state.step_key()
    # Under float16 the loss is scaled and the gradients unscaled (jaxnets.precision).
    grad_fn = precision.value_and_grad(loss_and_updates, state.loss_scale)
    (loss, (outputs, new_model_state, per_example, reg)), grads = grad_fn(
        state.params, state, batch, key
    )
    new_state = apply_gradients(state, grads, loss, new_model_state)
    return new_state, metric_sums(state, outputs, batch, per_example, reg)


def predict_step(state: TrainState, batch: dict):
    """Model outputs on ``batch['x']`` in inference mode (running BatchNorm statistics).

    The outputs are float32 even when the model computes in half precision.

    Example:
      >>> import numpy as np, flax.linen as nn
      >>> from jaxnets.training import create_train_state, predict_step
      >>> model = nn.Dense(2, kernel_init=nn.initializers.ones)
      >>> x = np.ones((2, 3), np.float32)
      >>> state = create_train_state(model, "sgd", x[:1], precision="bfloat16")
      >>> out = predict_step(state, {"x": x})
      >>> out.tolist(), out.dtype  # 1 + 1 + 1, computed in bfloat16
      ([[3.0, 3.0], [3.0, 3.0]], dtype('float32'))
    """
    variables, x = precision.cast_to_compute(state.precision, (state.variables, batch["x"]))
    outputs = state.apply_fn(variables, x, **model_kwargs(state, batch, train=False))
    return precision.cast_to_float32(outputs)


def predict_with_penalty(state: TrainState, batch: dict):
    """`predict_step`'s outputs and the loss's penalty (``l1``/``l2`` and the layers' regularizers).

    Keras's evaluation loss includes the regularizers, as the training loss does.
    """
    variables, x = precision.cast_to_compute(state.precision, (state.variables, batch["x"]))
    outputs, sown = state.apply_fn(
        variables, x, mutable=[regularizers.COLLECTION], **model_kwargs(state, batch, train=False)
    )
    reg = penalty(state.params, state.l1, state.l2) + regularizers.total(sown)
    return precision.cast_to_float32(outputs), reg


def eval_step(state: TrainState, batch: dict) -> dict:
    """The metric sums of a batch in inference mode.

    Example:
      >>> import numpy as np, flax.linen as nn
      >>> from jaxnets import metrics
      >>> from jaxnets.training import create_train_state, eval_step
      >>> model = nn.Dense(2, kernel_init=nn.initializers.zeros)  # logits 0: p = 1/2 each
      >>> state = create_train_state(model, "sgd", np.zeros((1, 3), np.float32))
      >>> batch = {"x": np.ones((4, 3), np.float32), "y": np.array([0, 0, 1, 0], np.int32),
      ...          "mask": np.ones(4, np.float32)}
      >>> logs = metrics.compute_all(state.metric_table, eval_step(state, batch))
      >>> round(logs["loss"], 4), logs["accuracy"]  # log 2; a tie's arg-max is class 0
      (0.6931, 0.75)
    """
    outputs, reg = predict_with_penalty(state, batch)
    per_example = per_example_loss(state, outputs, batch["y"], batch.get("x_mask"), batch["mask"])
    return metric_sums(state, outputs, batch, per_example, reg)
