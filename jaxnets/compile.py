"""Compile management: a persistent cache, a pre-flight report and a retrace guard.

* **Persistent cache** (`jaxnets.compile_cache`, whose names this module
  re-exports): XLA executables kept in ``~/.cache/jaxnets/xla`` (or
  ``$JAXNETS_COMPILE_CACHE``; ``off`` disables it) between runs.
* **Pre-flight report.** `GuardedStep` compiles a jitted function with
  ``lower(...).compile()`` once, records the compile time, the FLOPs of one
  call (XLA cost analysis) and its peak memory (XLA memory analysis), and then
  runs that very executable: nothing is compiled twice.
* **Executable store.** Inside `jaxnets.executable_store.use` (``jaxnets
  train`` opens one), `GuardedStep` loads a program stored by an earlier run
  of the same command instead of tracing and compiling it, and stores the
  ones it compiles.
* **Retrace guard.** When a `GuardedStep` meets arguments whose shapes, dtypes
  or static values differ from its first call, it compiles again and warns once
  with a `RetraceWarning` naming the argument that changed.

Example:
  >>> import jax, jax.numpy as jnp
  >>> step = GuardedStep(jax.jit(lambda w, x: w * x), "scale", ("w", "x"))
  >>> float(step(jnp.float32(2.0), jnp.float32(3.0)))
  6.0
  >>> step.report.programs[0].flops >= 1.0
  True
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence

import jax
import numpy as np

from jaxnets import cpu_dots, cpu_memory, executable_store
from jaxnets.compile_cache import (  # noqa: F401  (re-exported: jaxnets.compile.<name>)
    ENV_VAR,
    cache_dir,
    default_cache_dir,
    disable_cache,
    enable_cache,
    ensure_default_cache,
)


class RetraceWarning(UserWarning):
    """A compiled step met arguments of a new shape, dtype or static value."""


def _si(value: float, unit: str, base: int = 1000) -> str:
    prefixes = ("", "Ki", "Mi", "Gi", "Ti") if base == 1024 else ("", "k", "M", "G", "T")
    for prefix in prefixes[:-1]:
        if abs(value) < base:
            return f"{value:.3g} {prefix}{unit}"
        value /= base
    return f"{value:.3g} {prefixes[-1]}{unit}"


@dataclasses.dataclass
class ProgramReport:
    """What XLA says about one compiled program.

    Attributes:
      name: the program's name, the `GuardedStep`'s ``name``.
      compile_s: wall-clock seconds spent tracing, lowering and compiling it
        (as measured when first compiled, also for a reused program).
      flops: floating-point operations of one call, from XLA's cost analysis
        (a ``scan``/``while`` body counts once); 0 when XLA reports none.
      peak_bytes: peak memory of one call in bytes, from XLA's memory analysis
        (``peak_memory_in_bytes``); 0 when XLA reports none.
      cached: True when the executable was reused from an earlier `GuardedStep`
        of the same jitted function and signature in this process (e.g. an
        earlier fit), not compiled again.
      loaded: True when the executable was read from an executable store
        (`jaxnets.executable_store`: a command-line run seen before), so
        ``compile_s`` is the seconds it took to load.
      note: what this variant is for (the ``describe`` or ``compile_for`` note,
        e.g. a bucket) and, on CPU with ``tune_dots``, the measured
        matrix-multiply choice; ``""`` when there is none.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.compile import GuardedStep
      >>> matmul = jax.jit(lambda x: x @ x)
      >>> first = GuardedStep(matmul, "matmul", ("x",))
      >>> second = GuardedStep(matmul, "matmul", ("x",))  # shares first's executable
      >>> _, _ = first(jnp.ones((4, 4))), second(jnp.ones((4, 4)))
      >>> program = first.report.programs[0]
      >>> program.name, program.flops >= 2 * 4**3, program.cached
      ('matmul', True, False)
      >>> second.report.programs[0].cached
      True
    """

    name: str
    compile_s: float
    flops: float  # per call (a scan/while body counts once)
    peak_bytes: int
    cached: bool = False  # reused from an earlier fit in this process
    note: str = ""
    loaded: bool = False  # read from an executable store, neither traced nor compiled

    def __str__(self) -> str:
        note = f" [{self.note}]" if self.note else ""
        reuse = " (reused)" if self.cached else " (stored executable)" if self.loaded else ""
        return (
            f"  {self.name}{note}: compile {self.compile_s:.2f}s{reuse}, "
            f"{_si(self.flops, 'FLOP')} per step, peak memory {_si(self.peak_bytes, 'B', 1024)}"
        )


@dataclasses.dataclass
class CompileReport:
    """The pre-flight report: one line per compiled program, plus the parameter count.

    Attributes:
      params: the model's number of parameter scalars (see `param_count`); 0 by default.
      programs: a `ProgramReport` per compiled (or reused) program, in compile
        order; `GuardedStep` appends to it.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.compile import CompileReport, GuardedStep
      >>> report = CompileReport(params=16)
      >>> step = GuardedStep(jax.jit(lambda x: x + 1), "add one", ("x",), report=report)
      >>> _ = step(jnp.zeros(3))
      >>> print(report)
      pre-flight: 16 parameters; compile cache: ...
        add one: compile ...s, ... FLOP per step, peak memory ...B
    """

    params: int = 0
    programs: list[ProgramReport] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        head = f"pre-flight: {self.params:,} parameters; compile cache: {cache_dir() or 'off'}"
        return "\n".join([head, *map(str, self.programs)])


def param_count(params) -> int:
    """Number of scalars in a pytree of arrays.

    Args:
      params: a pytree whose leaves are arrays (or scalars), e.g. a model's ``params``.

    Returns:
      The total number of elements of all leaves, as an ``int``.

    Example:
      >>> param_count({"w": np.zeros((3, 4)), "b": np.zeros(4)})
      16
    """
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def _skeleton(tree):
    """The tree with array leaves replaced by their abstract value (static fields kept)."""
    return jax.tree.map(lambda x: jax.typeof(x), tree)


def _fmt(aval) -> str:
    return str(aval).replace("~", "weak ")


def describe_change(old, new, path: str) -> str | None:
    """The first difference between two skeletons, as ``"path: what -> what"``.

    A skeleton is a pytree whose array leaves are abstract values (``jax.typeof``);
    the result is None when the skeletons are equal.

    Args:
      old: the earlier skeleton (e.g. of a step's first call's argument).
      new: the later skeleton to compare with it.
      path: the name the message gives the root of the trees (e.g. the argument
        name); sub-paths are appended as ``['key']``, ``[i]`` or ``.field``.

    Returns:
      ``"path: old -> new"`` for up to three differing leaves (``"(and N more)"``
      beyond), a static field's or key set's change, or a structure change;
      None when the skeletons are equal.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.compile import describe_change
      >>> skeleton = lambda tree: jax.tree.map(jax.typeof, tree)
      >>> old = skeleton({"x": jnp.zeros((8, 3)), "y": jnp.zeros(8, jnp.int32)})
      >>> new = skeleton({"x": jnp.zeros((5, 3)), "y": jnp.zeros(8, jnp.int32)})
      >>> describe_change(old, new, "batch")
      "batch['x']: float32[8,3] -> float32[5,3]"
      >>> print(describe_change(old, old, "batch"))
      None
    """
    if jax.tree.structure(old) == jax.tree.structure(new):
        pairs = zip(jax.tree_util.tree_flatten_with_path(old)[0], jax.tree.leaves(new), strict=True)
        changes = [
            f"{path}{jax.tree_util.keystr(kp)}: {_fmt(a)} -> {_fmt(b)}"
            for (kp, a), b in pairs
            if a != b
        ]
        more = f" (and {len(changes) - 3} more)" if len(changes) > 3 else ""
        return "; ".join(changes[:3]) + more if changes else None
    if dataclasses.is_dataclass(old) and type(old) is type(new):
        for f in dataclasses.fields(old):
            a, b = getattr(old, f.name), getattr(new, f.name)
            if f.metadata.get("pytree_node", True):
                found = describe_change(a, b, f"{path}.{f.name}")
            else:
                found = None if a == b else f"{path}.{f.name} (static): {a!r} -> {b!r}"
            if found:
                return found
    if isinstance(old, dict) and isinstance(new, dict):
        if set(old) != set(new):
            return f"{path}: keys {sorted(old)} -> {sorted(new)}"
        for k in old:
            found = describe_change(old[k], new[k], f"{path}[{k!r}]")
            if found:
                return found
    if isinstance(old, tuple) and isinstance(new, tuple) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            found = describe_change(a, b, f"{path}[{i}]")
            if found:
                return found
    return f"{path}: structure {jax.tree.structure(old)} -> {jax.tree.structure(new)}"


class BoundedCache(OrderedDict):
    """A dict that forgets its oldest entries beyond ``limit`` (compiled programs, shapes...).

    "Oldest" is insertion order: neither reading nor overwriting an entry moves
    it; ``put`` stores an entry, evicts beyond ``limit`` and returns the value.

    Args:
      limit: the most entries kept (default 64); ``put`` evicts the oldest beyond it.

    Example:
      >>> cache = BoundedCache(limit=2)
      >>> for k in "abc":
      ...     _ = cache.put(k, k.upper())
      >>> list(cache)
      ['b', 'c']
    """

    def __init__(self, limit: int = 64):
        super().__init__()
        self.limit = limit

    def put(self, key, value):
        self[key] = value
        while len(self) > self.limit:
            self.popitem(last=False)
        return value


def signature(tree) -> tuple:
    """A hashable key of a pytree's structure, shapes and dtypes: one compile (or trace) each.

    Args:
      tree: any pytree (e.g. a step's argument tuple); array values are ignored,
        only the tree structure and each leaf's abstract value (``jax.typeof``:
        shape, dtype, weak type) count.

    Returns:
      ``(treedef, avals)``: the tree structure and a tuple of the leaves'
      abstract values, equal for trees that compile to the same program.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.compile import signature
      >>> signature((jnp.zeros((2, 3)), 1.0)) == signature((jnp.ones((2, 3)), 2.0))
      True
      >>> signature(jnp.zeros((2, 3))) == signature(jnp.zeros((4, 3)))
      False
    """
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple(jax.typeof(x) for x in leaves)


def _compile(lowered, options: dict):
    with warnings.catch_warnings():
        # Several temp heaps cannot be serialized: such a program is simply not cached.
        warnings.filterwarnings("ignore", ".*Multiple temp buffer allocations")
        return lowered.compile(options) if options else lowered.compile()


# Executables shared by every GuardedStep, so a second fit of the same model reuses them.
_EXECUTABLES = BoundedCache(limit=64)
STATS = {"compiles": 0, "loads": 0}  # loads: from an executable store


class GuardedStep:
    """Runs a jitted function through executables compiled once per argument signature.

    Args:
      jitted: a ``jax.jit`` function.
      name: what the report and warnings call it.
      arg_names: a name for each positional argument.
      expected_variants: signatures that may compile without a warning (e.g. one
        per length bucket, or a shorter last chunk).
      on_compile: called with each new `ProgramReport` (the loop prints it).
      report: the `CompileReport` its programs are added to (default: a new one,
        ``.report``).
      describe: ``describe(args) -> str`` notes what a new variant is for (e.g. a bucket).
      reuse_memory: on CPU, compile so that calls reuse their host memory
        (`jaxnets.cpu_memory`); for programs called once per step. Such a
        program whose temporaries span several heaps is not written to the
        persistent cache (XLA cannot serialize it).
      tune_dots: on CPU, pick XLA's matrix-multiply library for this program
        by measuring (`jaxnets.cpu_dots`); for a program called as
        ``f(state, sums, *rest) -> (state, sums)``.
      dots_proxy: for a program too long to time (a fused epoch),
        ``dots_proxy(args) -> (traced, options, args)`` of the per-step
        program whose measured choice it shares.

    Example:
      >>> import warnings, jax, jax.numpy as jnp
      >>> from jaxnets.compile import GuardedStep
      >>> step = GuardedStep(jax.jit(lambda x: 2 * x), "double", ("x",))
      >>> step(jnp.ones(3)).tolist()
      [2.0, 2.0, 2.0]
      >>> with warnings.catch_warnings(record=True) as caught:
      ...     warnings.simplefilter("always")
      ...     _ = step(jnp.ones(4))  # a new shape: a second compile, and a RetraceWarning
      >>> print(caught[0].message)
      double compiles again because x: float32[3] -> float32[4]. Each new shape, ...
      >>> len(step.report.programs)
      2
    """

    def __init__(
        self,
        jitted,
        name: str,
        arg_names: Sequence[str],
        *,
        expected_variants: int = 1,
        on_compile: Callable[[ProgramReport], None] | None = None,
        report: CompileReport | None = None,
        describe: Callable | None = None,
        reuse_memory: bool = False,
        tune_dots: bool = False,
        dots_proxy: Callable | None = None,
    ):
        self.jitted, self.name, self.arg_names = jitted, name, tuple(arg_names)
        self.reuse_memory = reuse_memory
        self.tune_dots, self.dots_proxy = tune_dots, dots_proxy
        self.expected_variants = expected_variants
        self.on_compile, self.describe = on_compile, describe
        self.report = report if report is not None else CompileReport()
        self._variants: dict = {}  # treedef/avals key -> executable
        self._first = None  # skeletons of the first call's arguments
        self._warned = False
        self._current = None

    def __call__(self, *args):
        if self._current is not None:
            try:
                return self._current(*args)
            except TypeError:
                pass  # another signature: find or compile its executable below
        self._current = self._executable(args)
        return self._current(*args)

    def compile_for(self, *args, note: str = ""):
        """Compiles (or finds) the executable for ``args`` without running it."""
        self._current = self._executable(args, note)
        return self._current

    def _executable(self, args, note: str = ""):
        key = signature(args)
        if key in self._variants:
            return self._variants[key]
        skeleton = tuple(_skeleton(a) for a in args)
        note = note or (self.describe(args) if self.describe else "")
        if self._first is None:
            self._first = skeleton
        elif len(self._variants) >= self.expected_variants and not self._warned:
            self._warned = True
            change = next(
                (
                    c
                    for old, new, nm in zip(self._first, skeleton, self.arg_names, strict=True)
                    if (c := describe_change(old, new, nm))
                ),
                "an argument",
            )
            warnings.warn(
                f"{self.name} compiles again because {change}. Each new shape, dtype or "
                "static value costs a compile; keep them fixed (pad batches, keep "
                "hyperparameters as arrays of the same dtype).",
                RetraceWarning,
                stacklevel=3,
            )
        # Every request is keyed, also one this process answers from memory below,
        # so a store numbers the programs of a run alike in every process.
        store = executable_store.active() if hasattr(self.jitted, "trace") else None
        slot = store.slot(self.name, args, self.jitted) if store is not None else None
        shared = (self.jitted, key, self.reuse_memory, self.tune_dots)
        if shared in _EXECUTABLES:
            compiled, rep = _EXECUTABLES[shared]
            rep = dataclasses.replace(rep, cached=True, note=note or rep.note)
        else:
            start = time.perf_counter()
            compiled, tuned, loaded = self._load_or_compile(args, slot)
            seconds = time.perf_counter() - start
            STATS["loads" if loaded else "compiles"] += 1
            cost = compiled.cost_analysis() or {}
            cost = cost[0] if isinstance(cost, list) else cost
            mem = compiled.memory_analysis()
            peak = int(getattr(mem, "peak_memory_in_bytes", 0) or 0) if mem else 0
            note = ", ".join(filter(None, (note, tuned)))
            flops = float(cost.get("flops", 0.0))
            rep = ProgramReport(self.name, seconds, flops, peak, note=note, loaded=loaded)
            _EXECUTABLES.put(shared, (compiled, rep))
        self._variants[key] = compiled
        self.report.programs.append(rep)
        if self.on_compile is not None:
            self.on_compile(rep)
        return compiled

    def _load_or_compile(self, args, slot):
        """``(executable, dots note, loaded)``: from ``slot`` of the open executable
        store (`jaxnets.executable_store`, command-line runs) or compiled now."""
        if not hasattr(self.jitted, "trace"):  # an eager stand-in
            return _compile(self.jitted.lower(*args), {}), "", False
        found = slot.load() if slot is not None else None
        if found is not None:
            return found[0], found[1].get("dots", ""), True
        traced, options = self.jitted.trace(*args), {}
        if self.reuse_memory:
            options = cpu_memory.compiler_options(traced.jaxpr)
        if self.tune_dots and jax.default_backend() == "cpu":
            compile_fn = lambda: cpu_dots.compile_tuned(  # noqa: E731
                _compile, traced, options, args, proxy=self.dots_proxy
            )
        else:
            compile_fn = lambda: (_compile(traced.lower(), options), "")  # noqa: E731
        if slot is None:
            compiled, tuned = compile_fn()
            return compiled, tuned, False
        compiled, tuned = executable_store.compile_fresh(compile_fn)
        slot.save(compiled, {"dots": tuned})
        return compiled, tuned, False
