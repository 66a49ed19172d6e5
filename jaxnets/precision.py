"""Mixed precision: compute in bfloat16 or float16, keep the weights in float32.

A `TrainState` created with ``precision="bfloat16"`` (or ``"float16"``) keeps
its parameters, optimizer state and model state in float32. Inside the step,
`cast_to_compute` casts the parameters and floating inputs to the compute
dtype, so matmuls and convolutions run in half precision; the outputs are cast
back to float32 (`cast_to_float32`) before the loss, and the gradients arrive
in float32 because they flow back through the casts.

float16 has a narrow exponent range, so its gradients underflow unless the loss
is scaled up first. `DynamicScale` does that the way ``jmp`` and Keras do:
multiply the loss by ``scale``, divide the gradients by it; when a gradient is
not finite the step skips the update (the training step's guard) and halves the
scale; after ``period`` finite steps in a row it doubles it. bfloat16 has
float32's exponent range and needs no scaling.

Example:
  >>> import jax.numpy as jnp
  >>> ls = DynamicScale.create(initial=8.0, period=2)
  >>> for finite in (True, True, False):
  ...     ls = ls.adjust(jnp.array(finite))
  ...     print(float(ls.scale), int(ls.good_steps))
  8.0 1
  16.0 0
  8.0 0
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxnets.errors import lookup

# Accepted names (Keras's mixed-precision policy names too) -> canonical name.
_NAMES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "mixed_bfloat16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "mixed_float16": "float16",
}
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def canonical(precision: str) -> str:
    """The canonical name of a precision: ``"float32"``, ``"bfloat16"`` or ``"float16"``.

    Args:
      precision: a precision name, case-insensitive: ``"float32"``/``"fp32"``,
        ``"bfloat16"``/``"bf16"``/``"mixed_bfloat16"`` or
        ``"float16"``/``"fp16"``/``"mixed_float16"`` (Keras policy names).

    Returns:
      The canonical name.

    Raises:
      UnknownNameError: an unknown precision name.

    Example:
      >>> canonical("mixed_bfloat16")
      'bfloat16'
    """
    return lookup(precision, _NAMES, kind="precision")


def compute_dtype(precision: str):
    """The dtype the model computes in under ``precision``.

    Args:
      precision: a precision name, case-insensitive: ``"float32"``/``"fp32"``,
        ``"bfloat16"``/``"bf16"``/``"mixed_bfloat16"`` or
        ``"float16"``/``"fp16"``/``"mixed_float16"`` (Keras policy names).

    Returns:
      ``jnp.float32``, ``jnp.bfloat16`` or ``jnp.float16``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.precision import compute_dtype
      >>> jnp.dtype(compute_dtype("mixed_bfloat16")), jnp.dtype(compute_dtype("fp16"))
      (dtype(bfloat16), dtype('float16'))
    """
    return _DTYPES[canonical(precision)]


def _cast_floats(tree, dtype):
    def cast(x):
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dtype:
            return x.astype(dtype)
        return x

    return jax.tree.map(cast, tree)


def cast_to_compute(precision: str, tree):
    """Casts the floating leaves of ``tree`` (params, inputs) to the compute dtype.

    Integer leaves (token ids, labels) are left alone; float32 precision is a no-op.

    Args:
      precision: a precision name, case-insensitive: ``"float32"``/``"fp32"``,
        ``"bfloat16"``/``"bf16"``/``"mixed_bfloat16"`` or
        ``"float16"``/``"fp16"``/``"mixed_float16"`` (Keras policy names).
      tree: a pytree of arrays (params, an input batch...); leaves without a
        floating dtype, and non-array leaves, are kept as they are.

    Returns:
      ``tree`` with its floating leaves in `compute_dtype` (``tree`` itself for float32).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.precision import cast_to_compute
      >>> tree = cast_to_compute("bfloat16", {"w": jnp.ones(2), "ids": jnp.arange(2)})
      >>> tree["w"].dtype, tree["ids"].dtype
      (dtype(bfloat16), dtype('int32'))
    """
    name = canonical(precision)
    return tree if name == "float32" else _cast_floats(tree, _DTYPES[name])


def cast_to_float32(tree):
    """Casts half-precision floating leaves back to float32 (outputs before the loss).

    Args:
      tree: a pytree of arrays, e.g. model outputs; every floating leaf that is
        not float32 (bfloat16, float16, also float64) is cast, others are kept.

    Returns:
      ``tree`` with float32 floating leaves.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.precision import cast_to_float32
      >>> out = cast_to_float32({"logits": jnp.ones(2, jnp.bfloat16), "ids": jnp.arange(2)})
      >>> out["logits"].dtype, out["ids"].dtype
      (dtype('float32'), dtype('int32'))
    """
    return _cast_floats(tree, jnp.float32)


def cast_like(tree, reference):
    """Casts each leaf of ``tree`` to the dtype of the matching leaf of ``reference``.

    The model state (e.g. BatchNorm statistics) comes back from a half-precision
    apply in half precision; casting it back keeps the state's dtypes fixed.

    Args:
      tree: a pytree of arrays, e.g. the model state from a half-precision apply.
      reference: a pytree of the same structure whose leaves' dtypes are the targets.

    Returns:
      ``tree`` with each leaf in its reference leaf's dtype (integer leaves included).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.precision import cast_like
      >>> stats = cast_like({"mean": jnp.ones(2, jnp.float16)}, {"mean": jnp.zeros(2)})
      >>> stats["mean"].dtype
      dtype('float32')
    """
    return jax.tree.map(
        lambda x, r: x.astype(r.dtype) if x.dtype != r.dtype else x, tree, reference
    )


class DynamicScale(struct.PyTreeNode):
    """Dynamic loss scaling state: part of the `TrainState` for float16 training.

    Attributes:
      scale: current loss scale (float32 scalar).
      good_steps: finite steps since the scale last changed (int32 scalar).
      period: double the scale after this many finite steps in a row.
      factor: multiply by this on growth, divide by it on overflow.
      min_scale: the scale never drops below this.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.precision import DynamicScale
      >>> ls = DynamicScale.create(initial=8.0)
      >>> float(ls.scale_loss(jnp.float32(0.5)))
      4.0
      >>> ls.unscale({"w": jnp.array([8.0, 16.0])})["w"].tolist()
      [1.0, 2.0]
    """

    scale: jax.Array
    good_steps: jax.Array
    period: int = struct.field(pytree_node=False, default=2000)
    factor: float = struct.field(pytree_node=False, default=2.0)
    min_scale: float = struct.field(pytree_node=False, default=1.0)

    @classmethod
    def create(
        cls, initial: float = 2.0**15, period: int = 2000, factor: float = 2.0
    ) -> DynamicScale:
        """A fresh scale; 2**15 and 2000 steps are the defaults of Keras and ``jmp``."""
        return cls(
            scale=jnp.asarray(initial, jnp.float32),
            good_steps=jnp.zeros((), jnp.int32),
            period=int(period),
            factor=float(factor),
        )

    def scale_loss(self, loss):
        return loss * self.scale.astype(loss.dtype)

    def unscale(self, grads):
        return jax.tree.map(lambda g: g / self.scale.astype(g.dtype), grads)

    def adjust(self, finite: jax.Array) -> DynamicScale:
        """The next scale: halve on a non-finite step, double after ``period`` finite ones.

        The scale does not grow past the largest finite float32 it can reach.
        """
        grown = self.good_steps + 1 >= self.period
        larger = self.scale * self.factor
        # Growth stops below float32's overflow (as TensorFlow's loss scale does): an
        # inf scale makes every later step non-finite (inf / 2 is inf, 0 * inf NaN).
        grown_scale = jnp.where(jnp.isfinite(larger), larger, self.scale)
        scale = jnp.where(
            finite,
            jnp.where(grown, grown_scale, self.scale),
            jnp.maximum(self.scale / self.factor, self.min_scale),
        )
        good = jnp.where(finite & ~grown, self.good_steps + 1, 0).astype(jnp.int32)
        return self.replace(scale=scale.astype(jnp.float32), good_steps=good)


def initial_loss_scale(precision: str) -> DynamicScale | None:
    """A `DynamicScale` for float16, None (no scaling) otherwise.

    Args:
      precision: a precision name, case-insensitive: ``"float32"``/``"fp32"``,
        ``"bfloat16"``/``"bf16"``/``"mixed_bfloat16"`` or
        ``"float16"``/``"fp16"``/``"mixed_float16"`` (Keras policy names).

    Returns:
      ``DynamicScale.create()`` (scale 2**15, period 2000, factor 2) for
      float16; None for float32 and bfloat16.

    Example:
      >>> from jaxnets.precision import initial_loss_scale
      >>> float(initial_loss_scale("float16").scale), initial_loss_scale("bfloat16")
      (32768.0, None)
    """
    return DynamicScale.create() if canonical(precision) == "float16" else None


def value_and_grad(fn, loss_scale: DynamicScale | None):
    """``jax.value_and_grad(fn, has_aux=True)`` with the loss scaled when ``loss_scale`` is set.

    The returned loss and gradients are unscaled; a gradient that overflowed
    stays non-finite, which the training step's guard turns into a skip.

    Args:
      fn: ``fn(*args) -> (loss, aux)``, a scalar loss and any auxiliary output;
        it is differentiated with respect to its first argument.
      loss_scale: a `DynamicScale` whose current ``scale`` multiplies the loss
        before differentiation (the gradients are divided by it again), or None
        for plain ``jax.value_and_grad``.

    Returns:
      A function ``(*args) -> ((loss, aux), grads)``, with the unscaled loss
      and gradients.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.precision import DynamicScale, value_and_grad
      >>> f = lambda w: (jnp.sum(w**2), "aux")  # loss 1 + 4, gradient 2w
      >>> grad_fn = value_and_grad(f, DynamicScale.create(initial=1024.0))
      >>> (loss, aux), grads = grad_fn(jnp.array([1.0, 2.0]))
      >>> float(loss), aux, grads.tolist()  # unscaled again
      (5.0, 'aux', [2.0, 4.0])
    """
    grad_fn = jax.value_and_grad(fn, has_aux=True)
    if loss_scale is None:
        return grad_fn

    def scaled(*args):
        loss, aux = fn(*args)
        return loss_scale.scale_loss(loss), (loss, aux)

    scaled_grad = jax.value_and_grad(scaled, has_aux=True)

    def wrapped(*args) -> tuple[tuple[Any, Any], Any]:
        (_, (loss, aux)), grads = scaled_grad(*args)
        return (loss, aux), loss_scale.unscale(grads)

    return wrapped


def adjust(loss_scale: DynamicScale | None, finite: jax.Array) -> DynamicScale | None:
    """`DynamicScale.adjust`, passing None through (no loss scaling).

    Args:
      loss_scale: the current `DynamicScale`, or None when there is no loss scaling.
      finite: a boolean scalar array, True when the step's gradients were all
        finite (the scale grows after ``period`` of them in a row) and False on
        an overflow (the scale is divided by ``factor``, down to ``min_scale``).

    Returns:
      The next `DynamicScale`, or None when ``loss_scale`` is None.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.precision import DynamicScale, adjust
      >>> float(adjust(DynamicScale.create(initial=8.0), jnp.array(False)).scale)  # overflow: halve
      4.0
      >>> adjust(None, jnp.array(False)) is None
      True
    """
    return None if loss_scale is None else loss_scale.adjust(finite)
