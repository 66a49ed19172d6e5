"""Executables of a ``jaxnets train`` run kept on disk, keyed before anything is traced.

JAX's persistent cache (`jaxnets.compile_cache`) spares a second run XLA's
compile, but the run still traces and lowers every program to compute that
cache's key. For a small model this is most of a warm start after the imports
(0.14 s of 0.20 s for ``jaxnets train`` of the MLP on digits; jax 0.10, 2 CPU
cores). A command-line run is described by its arguments, so its programs can
be keyed before tracing. `ExecutableStore` keys each program by

* the run's context: ``jaxnets train``'s arguments and its dataset's shapes;
* the program: its name, the structure (static fields included), abstract
  values and shardings of its arguments, and how many programs of that name
  and signature the run asked for before it;
* the environment: the bytes of every jaxnets source file, the versions of
  Python, JAX, jaxlib, Flax, Optax and NumPy, JAX's configuration,
  ``XLA_FLAGS`` and ``JAXNETS_*`` variables, and the devices.

A change in any of them is a miss: the program is traced and compiled, then
stored (compiled afresh when JAX's persistent cache answered: `compile_fresh`).
Only the command line opens a store (`for_run`, `use`): a Python caller's
model, loss or optimizer may close over anything, which no key computed before
tracing could see (nor does the key see a source patched at run time). A program that XLA cannot serialize, that captured large
constants, or that makes custom calls other than LAPACK's (a host callback,
say) is not stored; an unreadable entry is a miss.

An entry holds compiled machine code, as the entries of JAX's persistent cache
do: a store reads only from your own cache folder. What describes the code is
read without running Python code: JAX's description (a pickle from
``serialize_executable``) through a reader that refuses every class or function
but the listed ones (`jaxnets.executable_reader`), and the output structures as
JSON (`jaxnets.treedef_codec`).

Example:
  >>> import tempfile, jax, jax.numpy as jnp
  >>> from jaxnets import executable_store
  >>> double = jax.jit(lambda x: 2 * x)
  >>> with tempfile.TemporaryDirectory() as tmp:
  ...     for run in range(2):  # the second "run" loads what the first stored
  ...         store = executable_store.ExecutableStore(tmp, {"model": "double"})
  ...         with executable_store.use(store):
  ...             y = executable_store.call("double", double, jnp.ones(3))
  ...         print(y.tolist(), store.stats)
  [2.0, 2.0, 2.0] {'loaded': 0, 'stored': 1}
  [2.0, 2.0, 2.0] {'loaded': 1, 'stored': 0}
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import functools
import hashlib
import json
import os
import re
import sys
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from jaxnets import treedef_codec
from jaxnets.executable_reader import load_executable

FORMAT = 2  # bump when an entry's layout changes
MAGIC = b"jaxnets-executable\n"
MAX_ENTRIES = 512  # a folder keeps the newest ones (every edit of jaxnets is a new key)
_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("jaxnets_executable_store", default=None)
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_CUSTOM_CALL = re.compile(r'custom_call_target="([^"]+)"')


@functools.cache
def _package_digest() -> str:
    """SHA-256 of every jaxnets source file (path and bytes): an edit is a new key."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _plain(value):
    """A config value as text when its repr is stable across processes, else its type name."""
    if isinstance(value, str | int | float | bool | type(None) | enum.Enum):
        return repr(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return type(value).__name__


def environment() -> dict:
    """What every key of this process shares: sources, versions, configuration, devices.

    Example:
      >>> from jaxnets.executable_store import environment
      >>> sorted(environment())
      ['config', 'devices', 'env', 'jaxnets', 'versions']
    """
    import flax
    import optax
    from jax._src.lib import version_str as jaxlib_version

    return {
        "jaxnets": _package_digest(),
        "versions": [
            sys.version,
            jax.__version__,
            jaxlib_version,
            flax.__version__,
            optax.__version__,
            np.__version__,
        ],
        # Where the persistent cache lives changes no program.
        "config": sorted((k, _plain(v)) for k, v in jax.config.values.items() if "cache" not in k),
        "env": sorted(
            (k, v)
            for k, v in os.environ.items()
            if k == "XLA_FLAGS" or (k.startswith("JAXNETS_") and k != "JAXNETS_COMPILE_CACHE")
        ),
        "devices": [(d.platform, d.device_kind, d.id, d.process_index) for d in jax.devices()],
    }


def _leaf_key(x) -> str:
    if isinstance(x, jax.ShapeDtypeStruct):
        return f"{x.dtype}{list(x.shape)}@{x.sharding}"
    sharding = getattr(x, "sharding", None) if isinstance(x, jax.Array) else None
    return f"{jax.typeof(x)}@{sharding}"


_HITS = {"n": 0}  # JAX persistent-cache hits in this process


def _count_hits(event: str, **_) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _HITS["n"] += 1


jax.monitoring.register_event_listener(_count_hits)


def compile_fresh(compile_fn: Callable):
    """``compile_fn()``, compiled again with JAX's persistent cache off if that cache answered.

    An executable that JAX's cache loaded serializes without its kernels (jax
    0.10, XLA:CPU): a new process that loads it fails with "Function ... not
    found". Only a freshly compiled one may be stored. ``compile_fn`` must
    lower anew on each call (a `jax.stages.Lowered` keeps its first executable).
    """
    hits = _HITS["n"]
    compiled = compile_fn()
    if _HITS["n"] == hits:
        return compiled
    from jax._src import compilation_cache  # JAX decides once per process to use it

    # JAX also keeps the loaded executable in memory, keyed by the lowered program.
    jax.clear_caches()
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()
    try:
        return compile_fn()
    finally:
        jax.config.update("jax_enable_compilation_cache", True)
        compilation_cache.reset_cache()


class Slot:
    """One program's place in a store: its key, and `load`/`save` of its executable.

    An entry is a file: ``MAGIC``, the length of a JSON header (8 bytes, little
    endian), the header (the output structure, devices, notes) and JAX's
    serialized executable (`jax.experimental.serialize_executable`), compressed.
    """

    def __init__(self, store: ExecutableStore, key: str, in_tree):
        self.store, self.key, self.in_tree = store, key, in_tree
        self.path = store.folder / f"{key}.bin"

    def load(self):
        """``(compiled, meta)`` from disk, or None when absent or unreadable."""
        header, executable = self._read()
        try:
            if header.get("lapack"):
                # Sets the pointers LAPACK custom calls jump to; lowering such a
                # program does it, loading one does not (jax.export does the same).
                from jax._src.lax import linalg

                linalg.initialize_lapack()
            known = treedef_codec.static_objects(self.in_tree)
            out_tree = treedef_codec.decode(header["out_tree"], known)
            by_id = {d.id: d for d in jax.devices()}
            devices = [by_id[i] for i in header["devices"]]
            compiled = load_executable(zlib.decompress(executable), self.in_tree, out_tree, devices)
        except Exception:  # noqa: BLE001  (damaged, foreign or refused entry: compile instead)
            return None
        self.store.stats["loaded"] += 1
        return compiled, header.get("meta", {})

    def save(self, compiled, meta: dict | None = None) -> bool:
        """Writes ``compiled`` (atomically); False when it cannot be stored.

        ``compiled`` must come from a fresh compile (`compile_fresh`).
        """
        from jax.experimental import serialize_executable

        try:
            targets = set(_CUSTOM_CALL.findall(compiled.as_text()))
            if any(not t.startswith("lapack_") for t in targets):
                # A host callback or a library call may need set-up in the process
                # that lowered it, which a load in a new process would not repeat.
                return False
            # The devices it runs on (a one-device program among several devices
            # would otherwise be loaded onto all of them).
            devices = [d.id for d in compiled._executable._unloaded_executable.device_list]
            executable, _, out_tree = serialize_executable.serialize(compiled)
            executable = zlib.compress(executable, 6)  # ~5x smaller, ~1 ms to decompress
            known = treedef_codec.static_objects(self.in_tree)
            header = {"out_tree": treedef_codec.encode(out_tree, known), "devices": devices,
                      "lapack": bool(targets), "meta": dict(meta or {})}  # fmt: skip
        except Exception:  # noqa: BLE001  (several heaps, captured constants, unknown statics)
            return False
        return self._write(header, executable)

    def load_shapes(self):
        """The `jax.eval_shape` result `save_shapes` stored, or None."""
        header, _ = self._read()
        try:
            known = treedef_codec.static_objects(self.in_tree)
            tree = treedef_codec.decode(header["shapes"]["tree"], known)
            leaves = [
                jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype), weak_type=weak)
                for shape, dtype, weak in header["shapes"]["leaves"]
            ]
            shapes = tree.unflatten(leaves)
        except Exception:  # noqa: BLE001  (absent, damaged or foreign entry: trace instead)
            return None
        self.store.stats["loaded"] += 1
        return shapes

    def save_shapes(self, shapes) -> bool:
        """Writes a pytree of ``jax.ShapeDtypeStruct`` (an `jax.eval_shape` result)."""
        try:
            leaves, tree = jax.tree.flatten(shapes)
            known = treedef_codec.static_objects(self.in_tree)
            encoded = {
                "tree": treedef_codec.encode(tree, known),
                "leaves": [
                    [list(x.shape), np.dtype(x.dtype).name, bool(x.weak_type)] for x in leaves
                ],
            }
        except Exception:  # noqa: BLE001  (unknown statics, extended dtypes such as keys)
            return False
        return self._write({"shapes": encoded}, b"")

    def _read(self) -> tuple[dict, bytes]:
        """The entry's header and executable; ``({}, b"")`` if absent, damaged or foreign."""
        try:
            data = self.path.read_bytes()
            if not data.startswith(MAGIC):
                return {}, b""
            start = len(MAGIC) + 8
            size = int.from_bytes(data[len(MAGIC) : start], "little")
            header = json.loads(data[start : start + size])
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                return {}, b""
            executable = data[start + size :]
            if len(executable) != header.get("executable_bytes"):
                return {}, b""  # cut short
            return header, executable
        except (OSError, ValueError):
            return {}, b""

    def _write(self, header: dict, executable: bytes) -> bool:
        header = {"format": FORMAT, "executable_bytes": len(executable), **header}
        text = json.dumps(header).encode()
        data = MAGIC + len(text).to_bytes(8, "little") + text + executable
        try:
            self.store.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, self.path)  # a reader sees the old entry or the whole new one
            _prune(self.store.folder, MAX_ENTRIES)
        except OSError as err:
            warnings.warn(
                f"could not store an executable in {self.store.folder}: {err}", stacklevel=2
            )
            return False
        self.store.stats["stored"] += 1
        return True


def _prune(folder: Path, keep: int) -> None:
    """Deletes the least recently written entries beyond ``keep``."""
    with contextlib.suppress(OSError):  # another run pruned the same file first
        entries = sorted(folder.glob("*.bin"), key=lambda p: p.stat().st_mtime)
        for path in entries[: max(0, len(entries) - keep)]:
            path.unlink(missing_ok=True)


class ExecutableStore:
    """A folder of serialized executables for the runs described by ``context``.

    Args:
      folder: where entries are written (created on the first save).
      context: JSON-able description of the run (its arguments, its data's shapes):
        everything its programs depend on beyond the environment and their arguments.

    Attributes:
      stats: ``{"loaded": n, "stored": n}`` for this store's lifetime.

    Example:
      >>> import tempfile, jax, jax.numpy as jnp
      >>> from jaxnets.executable_store import ExecutableStore, compile_fresh
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     slot = ExecutableStore(tmp, {"run": 1}).slot("add", (jnp.ones(2),))
      ...     print(slot.load())  # nothing stored yet
      ...     lower = lambda: jax.jit(lambda x: x + 1).trace(jnp.ones(2)).lower()
      ...     compiled = compile_fresh(lambda: lower().compile())  # not one JAX's cache loaded
      ...     print(slot.save(compiled, {"note": "demo"}))
      ...     again = ExecutableStore(tmp, {"run": 1}).slot("add", (jnp.ones(2),)).load()
      ...     print(again[0](jnp.zeros(2)).tolist(), again[1])
      None
      True
      [1.0, 1.0] {'note': 'demo'}
    """

    def __init__(self, folder, context: dict):
        self.folder = Path(folder)
        self._base = json.dumps([FORMAT, context, environment()], sort_keys=True, default=repr)
        self._seen: dict = {}
        self.stats = {"loaded": 0, "stored": 0}

    def slot(self, name: str, args: tuple, fn=None, *, count: bool = True) -> Slot:
        """The `Slot` of program ``name`` (function ``fn``) called with ``args``.

        Args:
          name: what the program is called (e.g. the `GuardedStep`'s name).
          args: its positional arguments (arrays, ``ShapeDtypeStruct``s, pytrees).
          fn: the (jitted) function; its module and qualified name are part of the key.
          count: number the requests of one name, function and signature, so that
            two closures of the same code get two entries. Requests must then come
            in the same order in every run; False for a function without closure.
        """
        leaves, in_tree = jax.tree.flatten((tuple(args), {}))
        # Static fields print with the objects' reprs; addresses differ from run to run.
        signature = (
            name,
            _where(fn),
            _ADDRESS.sub("", str(in_tree)),
            [_leaf_key(x) for x in leaves],
        )
        text = json.dumps(signature)
        nth = self._seen[text] = self._seen.get(text, -1) + 1 if count else 0
        key = hashlib.sha256(f"{self._base}\0{text}\0{nth}".encode()).hexdigest()
        return Slot(self, key, in_tree)


def _where(fn) -> str:
    """Where ``fn``'s code is (module and qualified name), without addresses."""
    fn = getattr(fn, "__wrapped__", fn)
    if hasattr(fn, "__qualname__"):
        return f"{getattr(fn, '__module__', '')}.{fn.__qualname__}"
    return _ADDRESS.sub("", repr(fn))  # e.g. a functools.partial


def active() -> ExecutableStore | None:
    """The store `use` opened in this context, or None."""
    return _ACTIVE.get()


@contextlib.contextmanager
def use(store: ExecutableStore | None):
    """Programs compiled inside the ``with`` block (`call`, `jaxnets.compile.GuardedStep`)
    are loaded from, or saved to, ``store``; None keeps the block without a store."""
    token = _ACTIVE.set(store)
    try:
        yield store
    finally:
        _ACTIVE.reset(token)


def for_run(context: dict) -> ExecutableStore | None:
    """The store of a command-line run: ``<compile cache>/executables``, or None.

    None when the persistent compilation cache is off (the user asked for no
    cache) or when several processes run (their programs meet in collectives,
    and each must compile what the others do).
    """
    from jaxnets.compile_cache import cache_dir

    folder = cache_dir()
    if folder is None or jax.process_count() > 1:
        return None
    return ExecutableStore(Path(folder) / "executables", context)


def call(name: str, jitted, *args):
    """``jitted(*args)``, through the active store's executable when one is open.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.executable_store import call
      >>> call("square", jax.jit(lambda x: x * x), jnp.arange(3.0)).tolist()  # no store open
      [0.0, 1.0, 4.0]
    """
    store = active()
    if store is None:
        return jitted(*args)
    slot = store.slot(name, args, jitted)
    found = slot.load()
    if found is not None:
        return found[0](*args)
    compiled = compile_fresh(lambda: jitted.trace(*args).lower().compile())
    slot.save(compiled)
    return compiled(*args)


def eval_shape(name: str, fn, *args):
    """`jax.eval_shape` of ``fn(*args)``, read from the active store when one is open.

    ``fn`` must close over nothing that changes its output's shapes: only
    ``fn``'s code and the arguments are keyed.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxnets.executable_store import eval_shape
      >>> eval_shape("outer", lambda a: jnp.outer(a, a), jnp.ones(3)).shape  # no store open
      (3, 3)
    """
    store = active()
    if store is None:
        return jax.eval_shape(fn, *args)
    slot = store.slot(name, args, fn, count=False)  # no closure: (fn, args) decide the shapes
    shapes = slot.load_shapes()
    if shapes is None:
        shapes = jax.eval_shape(fn, *args)
        slot.save_shapes(shapes)
    return shapes
