"""Reading a stored executable's description without running any Python code.

JAX describes a serialized executable (``serialize_executable``) with a
pickle, and a pickle may name any function to call while it is read. This
module's reader refuses every class or function but `ALLOWED_NAMES` before it
is called, so a tampered entry of `jaxnets.executable_store` is refused
(`RefusedEntry`) instead of running code. The compiled code itself is trusted
as the entries of JAX's persistent cache are: it comes from your own cache
folder.

Example:
  >>> ("jax._src.core", "ShapedArray") in ALLOWED_NAMES, ("os", "system") in ALLOWED_NAMES
  (True, False)
"""

from __future__ import annotations

import io

import jax

# Every class or function an executable's description may name: what JAX 0.10's
# `serialize_executable` writes for jaxnets' programs (one or several devices,
# typed PRNG keys). Any other name refuses the entry before it is called, so a
# tampered entry cannot run Python code while it is read; one that a newer JAX
# writes differently is a miss, compiled and stored again.
ALLOWED_NAMES = frozenset(
    [
        ("jax", "P"),
        ("jax._src.core", "ManualAxisType"),
        ("jax._src.core", "MemorySpace"),
        ("jax._src.core", "ShapedArray"),
        ("jax._src.interpreters.pxla", "AllArgsInfo"),
        ("jax._src.interpreters.pxla", "UnloadedMeshExecutable"),
        ("jax._src.layout", "Layout"),
        ("jax._src.linear_util", "DebugInfo"),
        ("jax._src.mesh", "AbstractDevice"),
        ("jax._src.mesh", "AbstractMesh"),
        ("jax._src.mesh", "AxisType"),
        ("jax._src.mesh", "Mesh"),
        ("jax._src.named_sharding", "_unpickle_named_sharding"),
        ("jax._src.random.prng", "KeyTy"),
        ("jax._src.random.prng", "PRNGImpl"),
        ("jax._src.random.threefry2x32", "threefry_fold_in"),
        ("jax._src.random.threefry2x32", "threefry_random_bits"),
        ("jax._src.random.threefry2x32", "threefry_seed"),
        ("jax._src.random.threefry2x32", "threefry_split"),
        ("jax._src.sharding_impls", "_unpickle_single_device_sharding"),
        ("jax._src.stages", "ArgInfo"),
        ("jaxlib._jax", "DeviceList"),
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "_reconstruct"),
    ]
)


class RefusedEntry(Exception):
    """An entry names a class or function outside `ALLOWED_NAMES`."""


def load_executable(payload: bytes, in_tree, out_tree, devices) -> jax.stages.Compiled:
    """`jax.experimental.serialize_executable.deserialize_and_load`, reading only `ALLOWED_NAMES`.

    JAX describes an executable with a pickle, and a pickle may name any
    function to call while it is read; this reader refuses every name but the
    listed classes and constructors (the compiled code itself is trusted as JAX's
    persistent cache is: it comes from your own cache folder).
    """
    from jax.experimental import serialize_executable

    class Reader(serialize_executable._JaxPjrtUnpickler):
        def find_class(self, module, name):
            if (module, name) not in ALLOWED_NAMES:
                raise RefusedEntry(f"{module}.{name} is not an executable's part")
            return super().find_class(module, name)

    backend = devices[0].client
    unloaded, args_info_flat, no_kwargs = Reader(io.BytesIO(payload), backend, devices).load()
    args_info = in_tree.unflatten(args_info_flat)
    return jax.stages.Compiled(unloaded.load(), [], args_info, out_tree, no_kwargs=no_kwargs)
