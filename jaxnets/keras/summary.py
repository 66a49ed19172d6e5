"""``model.summary()``: layers, output shapes, parameter counts, FLOPs and memory.

Output shapes come from one abstract forward pass (``jax.eval_shape``) with a
Flax method interceptor that records each direct submodule's output in call
order. FLOPs are XLA's own count for the compiled forward pass and training
step (``jax.jit(f).lower(...).compile().cost_analysis()``), and the step's
memory is the compiled executable's ``memory_analysis()``: arguments plus
outputs plus temporaries, minus buffers aliased by donation.

Example:
  >>> from jaxnets import layers
  >>> from jaxnets.keras import Sequential
  >>> model = Sequential([layers.Dense(8, input_shape=(4,)), layers.Dense(2)])
  >>> s = summarize(model)
  >>> s.trainable_params, s.rows[0].output_shape, s.forward_flops >= 2 * (4 * 8 + 8 * 2)
  (58, '(None, 8)', True)
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.training import train_step
from jaxnets.training.state import mode_kwargs


@dataclasses.dataclass
class Row:
    name: str
    kind: str
    output_shape: str
    params: int


@dataclasses.dataclass
class ModelSummary:
    """What `summarize` measured; ``str()`` renders Keras's table."""

    name: str
    rows: list[Row]
    trainable_params: int
    non_trainable_params: int
    batch_size: int
    forward_flops: float | None
    train_step_flops: float | None = None
    train_step_bytes: int | None = None

    def __str__(self) -> str:
        labels = [f"{r.name} ({r.kind})" for r in self.rows]
        widths = (max([34, *(len(s) + 1 for s in labels)]), 26, 12)  # long names widen it
        line = "-" * sum(widths)
        head = f"{'Layer (type)':<{widths[0]}}{'Output Shape':<{widths[1]}}{'Param #':>{widths[2]}}"
        out = [f'Model: "{self.name}"', line, head, "=" * sum(widths)]
        for r, label in zip(self.rows, labels, strict=True):
            out.append(f"{label:<{widths[0]}}{r.output_shape:<{widths[1]}}{r.params:>{widths[2]},}")
        total = self.trainable_params + self.non_trainable_params
        out += [
            "=" * sum(widths),
            f"Total params: {total:,}",
            f"Trainable params: {self.trainable_params:,}",
            f"Non-trainable params: {self.non_trainable_params:,}",
            line,
            f"Forward pass FLOPs (batch {self.batch_size}): {_fmt_flops(self.forward_flops)}",
        ]
        if self.train_step_flops is not None:
            out.append(
                f"Training step FLOPs (batch {self.batch_size}): {_fmt_flops(self.train_step_flops)}"
            )
            out.append(f"Training step memory (XLA estimate): {_fmt_bytes(self.train_step_bytes)}")
        return "\n".join(out)


def _fmt_flops(f) -> str:
    if f is None:
        return "n/a"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if f >= scale:
            return f"{f / scale:.2f} {unit}FLOPs ({int(f):,})"
    return f"{int(f):,}"


def _fmt_bytes(b) -> str:
    if b is None:
        return "n/a"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= scale:
            return f"{b / scale:.2f} {unit}"
    return f"{b} B"


def _size(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def _shape_str(shapes: list[tuple]) -> str:
    parts = [str((None, *s[1:])) if s else "()" for s in shapes]
    return parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"


def layer_outputs(module, variables, x, call_kwargs) -> list[tuple[str, str, list]]:
    """``(name, class, output shapes)`` of each direct submodule, in call order."""
    seen: dict[str, tuple[str, object]] = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        m = context.module
        if context.method_name == "__call__" and len(m.path) == 1 and m.path[0] not in seen:
            shapes = [tuple(a.shape) for a in jax.tree.leaves(out) if hasattr(a, "shape")]
            seen[m.path[0]] = (type(m).__name__, shapes)
        return out

    def forward(v, x):
        with nn.intercept_methods(record):
            return module.apply(v, x, **call_kwargs)

    jax.eval_shape(forward, variables, x)
    return [(name, kind, out) for name, (kind, out) in seen.items()]


def _flops(compiled) -> float | None:
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):  # older JAX: one dict per computation
        cost = cost[0] if cost else {}
    return float(cost["flops"]) if cost and "flops" in cost else None


def _dummy_targets(state, out):
    kind = state.loss.kind
    b = out.shape[0]
    if kind == "sparse":
        return jnp.zeros(out.shape[:-1] if out.ndim > 2 else (b,), jnp.int32)
    return jnp.zeros(out.shape, jnp.float32)


def _frozen_size(model, params) -> int:
    """Scalars in the frozen parameters (Keras counts them non-trainable).

    A state whose optimizer was replaced by `freeze_params` or `GradualUnfreezing`
    freezes what that optimizer freezes (`jaxnets.checkpoint.freezing.frozen_mask`);
    otherwise the layers with ``trainable=False`` are frozen.
    """
    from jaxnets.checkpoint.freezing import FROZEN, frozen_mask, param_labels

    state = model.state
    mask = frozen_mask(state.tx, params) if state is not None else None
    if mask is None:
        patterns = model.frozen_patterns()
        if not patterns:
            return 0
        mask = jax.tree.map(lambda label: label == FROZEN, param_labels(params, 1.0, patterns))
    sizes = jax.tree.map(lambda frozen, p: p.size if frozen else 0, mask, params)
    return int(sum(jax.tree.leaves(sizes)))


def summarize(model, batch_size: int = 1) -> ModelSummary:
    """Measures ``model`` (a `jaxnets.keras.Model`) for a batch of ``batch_size`` rows."""
    variables = model._variables()
    shape, dtype = model._keras.input_spec
    x = jnp.zeros((batch_size, *shape), dtype)
    module = model.module
    kwargs = mode_kwargs(model._predict_state().call_kwargs, train=False)
    rows = []
    for name, kind, out in layer_outputs(module, variables, x, kwargs):
        count = sum(_size(c.get(name, {})) for c in variables.values())
        rows.append(Row(name, kind, _shape_str(out), count))
    forward = jax.jit(lambda v, x: module.apply(v, x, **kwargs))
    frozen = _frozen_size(model, variables.get("params", {}))
    summary = ModelSummary(
        name=getattr(model, "name", None) or type(module).__name__.lower(),
        rows=rows,
        trainable_params=_size(variables.get("params", {})) - frozen,
        non_trainable_params=_size({k: v for k, v in variables.items() if k != "params"}) + frozen,
        batch_size=batch_size,
        forward_flops=_flops(forward.lower(variables, x).compile()),
    )
    state = model.state
    if state is not None:
        out = jax.eval_shape(lambda v, x: state.apply_fn(v, x, **kwargs), state.variables, x)
        batch = {"x": x, "y": _dummy_targets(state, out), "mask": jnp.ones((batch_size,))}
        compiled = jax.jit(train_step, donate_argnums=0).lower(state, batch).compile()
        summary.train_step_flops = _flops(compiled)
        mem = compiled.memory_analysis()
        if mem is not None:
            summary.train_step_bytes = int(
                mem.argument_size_in_bytes
                + mem.output_size_in_bytes
                + mem.temp_size_in_bytes
                - mem.alias_size_in_bytes
            )
    return summary
