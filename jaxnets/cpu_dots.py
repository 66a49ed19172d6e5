"""Measuring which matrix-multiply library XLA:CPU should use for a training program.

XLA:CPU runs float32 dots through YNNPACK (its default in jaxlib 0.10) or
through Eigen, and neither is faster for every shape. Per-step training
programs on the 2-core machine of `benchmarks/` (medians, same process):

============================== ======== ==========
model                          YNNPACK  Eigen dots
============================== ======== ==========
MLP 784-128-10, batch 128      950 us   812 us
MLP 784-64-10, batch 128       584 us   542 us
MLP 784-512-512-10, batch 256  5.04 ms  5.48 ms
LSTM 128 over 64 steps         24.1 ms  26.8 ms
GRU 128 over 64 steps          24.8 ms  23.9 ms
============================== ======== ==========

No rule on the shapes predicts that table (a lone dot timed in a loop does
not even rank the MLP's dots the way the training step does), so jaxnets
measures, as PyTorch's ``cudnn.benchmark`` does for convolutions. The first
time a training feed compiles a program whose matrix products do at least
`MIN_FLOPS` per call, both variants are compiled and run on copies of the
real arguments, and Eigen is kept only if it takes at most `MARGIN` of
YNNPACK's time.

The programs measured are those of `fit`'s per-step loop and of
``fit(fuse="epoch")``; ``fuse="run"``, populations and evaluation keep XLA's
default. The decision is written beside the persistent compilation cache
(`DECISIONS_FILE`), keyed by the program's text, the JAX version and the CPU,
so later runs of the same program on this machine use it without measuring,
and a resumed run computes exactly as the killed one did. With the
compilation cache off, or in a multi-process run, nothing is measured and
XLA's default stays. A fused epoch is measured through its per-step program
(timing whole epochs would cost more than it saves) and shares that
program's decision, so the two paths compute alike.

Measuring costs a second compile and about 1.6 s of timing runs, once per
program and machine; the timing runs work on copies of the state, so memory
briefly holds three states.

``JAXNETS_CPU_DOTS`` overrides it: ``auto`` (the default), ``xla`` (XLA's
default libraries, never measure) or ``eigen``.

Example:
  >>> options("eigen")
  {'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_REDUCE'}
  >>> options("xla")
  {}
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax

from jaxnets.errors import ConfigError
from jaxnets.jaxprs import nested_jaxprs

ENV_VAR = "JAXNETS_CPU_DOTS"
MODES = ("auto", "xla", "eigen")
# YNNPACK stays on for reductions, where it is much faster than XLA's own loops
# (a Transformer's bias gradients); only dots go back to Eigen.
EIGEN_DOTS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}
MIN_FLOPS = 2e7  # below this a step is dispatch-bound: the library makes no difference
MARGIN = 0.95  # Eigen must be at least 5% faster: noise alone never switches
DECISIONS_FILE = "jaxnets-cpu-dots.json"
TIMING_BUDGET_S = 0.1  # per variant and round (shorter rounds understate the gap)


def mode() -> str:
    """``JAXNETS_CPU_DOTS``: ``auto`` (default), ``xla`` or ``eigen``."""
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ConfigError(f"{ENV_VAR} must be one of {', '.join(MODES)}; got {value!r}.")
    return value


def options(choice: str) -> dict:
    """The compiler options of a choice: ``"eigen"`` or ``"xla"`` (XLA's defaults)."""
    return dict(EIGEN_DOTS) if choice == "eigen" else {}


def decisions_file() -> Path | None:
    """Where decisions are kept: beside JAX's persistent compilation cache, if it is on."""
    folder = jax.config.jax_compilation_cache_dir
    return Path(folder) / DECISIONS_FILE if folder else None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        return platform.processor()
    return platform.processor()


@functools.cache
def _machine() -> str:
    return f"{_cpu_model()}|{os.cpu_count()}|jax {jax.__version__}|jaxlib {jax.lib.__version__}"


def program_key(lowered) -> str:
    """A key for a lowered program on this machine and JAX version."""
    text = lowered.as_text()
    return hashlib.sha256(f"{_machine()}\n{text}".encode()).hexdigest()[:32]


def recall(key: str) -> str | None:
    """The stored choice for ``key``, or None (unknown, cache off, or an unreadable file)."""
    path = decisions_file()
    if path is None or not path.exists():
        return None
    try:
        choice = json.loads(path.read_text()).get(key)
    except (OSError, ValueError):
        return None
    return choice if choice in ("xla", "eigen") else None


def remember(choices: dict[str, str]) -> None:
    """Adds ``{key: choice}`` to the decisions file (atomically: a crash leaves the old file)."""
    path = decisions_file()
    if path is None:
        return
    try:
        known = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        known = {}  # a damaged file is rewritten; the choices are only remeasured
    known.update(choices)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(known, indent=0, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a read-only cache only costs a remeasure next time


def _copies(args):
    """Fresh device copies of the donated ``(state, sums)``, so timing never touches the real ones."""

    def copy(a):
        if isinstance(a, jax.Array):
            return jax.device_put(a, a.sharding, may_alias=False)  # a transfer: compiles nothing
        return a

    return (*jax.tree.map(copy, tuple(args[:2])), *args[2:])


def seconds_per_call(candidates: dict, args, rounds: int = 7) -> dict[str, list[float]]:
    """Seconds per call of each compiled ``f(state, sums, *rest) -> (state, sums)``, per round.

    Each candidate runs on its own copies of ``args``, feeding its outputs back
    in, for about `TIMING_BUDGET_S` per round; the candidates take turns
    within a round, in alternating order, so a change in the machine's speed
    hits both alike. A first round is not counted: YNNPACK's first calls are
    up to 1.5x slower than its later ones.
    """
    chains, per_round = {}, {}
    for name, compiled in candidates.items():
        chain = _copies(args)
        start = time.perf_counter()
        chain = (*compiled(*chain), *chain[2:])  # the first call also maps its memory
        jax.block_until_ready(chain[:2])
        first = time.perf_counter() - start
        chains[name], per_round[name] = chain, max(1, min(200, int(TIMING_BUDGET_S / first)))
    times = {name: [] for name in candidates}
    order = list(candidates)
    for _ in range(rounds + 1):
        for name in order:
            compiled, chain, calls = candidates[name], chains[name], per_round[name]
            start = time.perf_counter()
            for _ in range(calls):
                chain = (*compiled(*chain), *chain[2:])
            jax.block_until_ready(chain[:2])
            times[name].append((time.perf_counter() - start) / calls)
            chains[name] = chain
        order.reverse()
    return {name: t[1:] for name, t in times.items()}


def dot_flops(closed_jaxpr) -> float:
    """FLOPs of the matrix products in a (closed) jaxpr; a loop body counts once, as in XLA.

    Example:
      >>> import jax.numpy as jnp
      >>> traced = jax.jit(lambda a, b: a @ b).trace(jnp.ones((8, 4)), jnp.ones((4, 2)))
      >>> dot_flops(traced.jaxpr)  # 2 * 8 * 4 * 2
      128.0
    """
    total = 0.0
    for jaxpr in nested_jaxprs(closed_jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                (contracting, _), _ = eqn.params["dimension_numbers"]
                lhs = eqn.invars[0].aval.shape
                k = math.prod(lhs[i] for i in contracting)
                total += 2.0 * k * math.prod(eqn.outvars[0].aval.shape)
    return total


def _name(choice: str) -> str:
    return "dots: Eigen" if choice == "eigen" else "dots: YNNPACK"


def measure(compile_fn: Callable, lowered, base: dict, args):
    """Compiles ``lowered`` with XLA's dots and with Eigen's, times both on ``args``.

    Returns ``(choice, compiled, note)``: the winner's executable is returned so
    it is not compiled again.
    """
    default = compile_fn(lowered, base)
    eigen = compile_fn(lowered, {**base, **EIGEN_DOTS})
    t = seconds_per_call({"xla": default, "eigen": eigen}, args)
    # The median of the rounds' ratios: each compares two runs a few ms apart.
    ratio = statistics.median(e / x for e, x in zip(t["eigen"], t["xla"], strict=True))
    choice = "eigen" if ratio <= MARGIN else "xla"
    note = f"{_name(choice)} (measured: Eigen {1 / ratio:.2f}x as fast as YNNPACK)"
    return choice, (eigen if choice == "eigen" else default), note


def compile_tuned(compile_fn: Callable, traced, base: dict, args, proxy: Callable | None = None):
    """Compiles ``traced`` on the CPU with the dot library measured (or recalled) for it.

    Args:
      compile_fn: ``compile_fn(lowered, options) -> executable``.
      traced: the traced program (``jax.jit(f).trace(*args)``), called as
        ``f(state, sums, *rest) -> (state, sums)``.
      base: the compiler options it needs anyway (e.g. `jaxnets.cpu_memory`'s).
      args: the arguments of its first call (only copies are run).
      proxy: for a program too long to time (a fused epoch), ``proxy(args) ->
        (traced, options, args)`` of the per-step program whose decision it shares.

    Returns:
      ``(executable, note)``, the note naming a measured choice for the report.
    """
    choice, lowered = mode(), traced.lower()
    if choice == "auto" and (
        decisions_file() is None or jax.process_count() > 1 or dot_flops(traced.jaxpr) < MIN_FLOPS
    ):
        # No place to keep a decision (measuring every run would change the
        # numbers from run to run); several processes, whose programs meet in
        # collectives and cannot each run their own timing calls; or too few
        # FLOPs in dots to matter.
        choice = "xla"
    if choice != "auto":
        forced = f"{_name(choice)} ({ENV_VAR})" if choice == "eigen" else ""
        return compile_fn(lowered, {**base, **options(choice)}), forced
    key = program_key(lowered)
    choice, note = recall(key), ""
    if choice is None and proxy is None:
        choice, compiled, note = measure(compile_fn, lowered, base, args)
        remember({key: choice})
        return compiled, note
    if choice is None:
        p_traced, p_base, p_args = proxy(args)
        p_lowered = p_traced.lower()
        p_key = program_key(p_lowered)
        choice = recall(p_key)
        if choice is None:
            choice, _, note = measure(compile_fn, p_lowered, p_base, p_args)
            note = f"{note}, on the per-step program"
        remember({key: choice, p_key: choice})
    return compile_fn(lowered, {**base, **options(choice)}), note or _name(choice)
