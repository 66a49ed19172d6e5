"""Multi-process start-up: `initialize`, per-process data shards and agreement checks.

Every process runs the same program on its own rows. `initialize` joins the
processes into one JAX runtime (``jax.distributed.initialize``), reading the
coordinator, the process count and this process's id from its arguments, else
from ``JAXNETS_COORDINATOR`` (``host:port`` of process 0),
``JAXNETS_NUM_PROCESSES`` and ``JAXNETS_PROCESS_ID``, else from JAX's own
cluster detection (Slurm, Open MPI, Cloud TPU...). A coordinator on
``127.0.0.1``/``localhost`` binds to the loopback interface only.

`process_shard` gives each process every ``P``-th row, padded with masked
rows so that all processes hold as many; `check_same_data` and
`assert_same_config` stop a run whose processes disagree, with an error in
every process, rather than let replicas diverge or hang in a collective.

Example:
  >>> import numpy as np
  >>> shard = process_shard({"x": np.arange(5), "y": np.arange(5)}, 1, 2)
  >>> shard["x"].tolist(), shard["mask"].tolist()
  ([1, 3, 1], [1.0, 1.0, 0.0])
"""

from __future__ import annotations

import json
import math
import os
import sys
import zlib

import jax
import numpy as np

from jaxnets.data.batching import pad_to
from jaxnets.errors import ConfigError, DataError

ENV_COORDINATOR = "JAXNETS_COORDINATOR"
ENV_NUM_PROCESSES = "JAXNETS_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXNETS_PROCESS_ID"
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def requested(environ=None) -> bool:
    """True when the environment asks for a multi-process run (a ``JAXNETS_*`` variable is set).

    Example:
      >>> requested({}), requested({"JAXNETS_NUM_PROCESSES": "2"})
      (False, True)
    """
    environ = os.environ if environ is None else environ
    return any(environ.get(k) for k in (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID))


def _env_int(name: str, environ) -> int | None:
    value = environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"${name} must be an integer, got {value!r}.") from None


def resolve_options(coordinator_address=None, num_processes=None, process_id=None, environ=None):
    """The ``jax.distributed.initialize`` keyword arguments, from arguments, else the environment.

    Example:
      >>> resolve_options(environ={"JAXNETS_COORDINATOR": "127.0.0.1:1234",
      ...                          "JAXNETS_NUM_PROCESSES": "2", "JAXNETS_PROCESS_ID": "1"})
      {'coordinator_address': '127.0.0.1:1234', 'num_processes': 2, 'process_id': 1, 'coordinator_bind_address': '127.0.0.1:1234'}
    """
    environ = os.environ if environ is None else environ
    coordinator_address = coordinator_address or environ.get(ENV_COORDINATOR) or None
    if num_processes is None:
        num_processes = _env_int(ENV_NUM_PROCESSES, environ)
    if process_id is None:
        process_id = _env_int(ENV_PROCESS_ID, environ)
    options = {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    if num_processes is not None and num_processes < 1:
        raise ConfigError(f"num_processes must be >= 1, got {num_processes}.")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ConfigError(f"process_id must lie in [0, {num_processes}), got {process_id}.")
    if coordinator_address is not None:
        host, sep, port = coordinator_address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(
                f"the coordinator address must be host:port (e.g. 127.0.0.1:12345), "
                f"got {coordinator_address!r}."
            )
        if host in LOCAL_HOSTS:
            # A local run: keep the coordinator off the other network interfaces.
            options["coordinator_bind_address"] = f"127.0.0.1:{port}"
    return options


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    initialization_timeout: int = 300,
    heartbeat_timeout_seconds: int = 100,
) -> tuple[int, int]:
    """Joins this process to a multi-process JAX runtime; returns ``(process_index, process_count)``.

    Must run before any JAX computation. Options left ``None`` come from
    ``$JAXNETS_COORDINATOR``, ``$JAXNETS_NUM_PROCESSES`` and
    ``$JAXNETS_PROCESS_ID``, then from JAX's cluster auto-detection. Calling it
    again once initialized does nothing. A process that loses a peer aborts
    (after ``heartbeat_timeout_seconds``); it does not raise. In a run of
    several processes an uncaught exception then ends this process at once
    (`exit_now`) rather than leaving it waiting at exit for peers that may be
    blocked in a collective; `jaxnets launch` then stops the others.
    """
    if jax.distributed.is_initialized():
        return jax.process_index(), jax.process_count()
    options = resolve_options(coordinator_address, num_processes, process_id)
    try:
        jax.distributed.initialize(
            **options,
            initialization_timeout=initialization_timeout,
            heartbeat_timeout_seconds=heartbeat_timeout_seconds,
        )
    except (ValueError, RuntimeError) as e:
        raise ConfigError(
            f"could not start the multi-process runtime ({e}). Pass coordinator_address, "
            f"num_processes and process_id, or set ${ENV_COORDINATOR}=host:port, "
            f"${ENV_NUM_PROCESSES} and ${ENV_PROCESS_ID} (`jaxnets launch` sets them), "
            "and call initialize() before any other JAX operation."
        ) from e
    if jax.process_count() > 1:
        sys.excepthook = _exit_after(sys.excepthook)
    return jax.process_index(), jax.process_count()


def _exit_after(previous):
    def hook(exc_type, exc, tb):
        previous(exc_type, exc, tb)
        exit_now(1)

    return hook


def exit_now(code: int) -> None:
    """In a multi-process run, ends this process at once with ``code``.

    A normal exit waits in JAX's shutdown barrier for every peer, and a peer
    blocked in a collective never comes: the failure would surface only after
    the timeouts. `initialize` makes uncaught exceptions exit this way; the
    CLI does so on errors. Does nothing in a single-process run.
    """
    if "jax" in sys.modules and jax.distributed.is_initialized() and jax.process_count() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def is_main_process() -> bool:
    """True in process 0, the one that prints progress and writes files."""
    return jax.process_index() == 0


def local_batch_size(global_batch_size: int) -> int:
    """Rows each process contributes to a global batch.

    Example:
      >>> local_batch_size(32)  # one process
      32
    """
    count = jax.process_count()
    if global_batch_size % count:
        raise ConfigError(
            f"the batch size {global_batch_size} must be a multiple of the process count "
            f"{count}: each process contributes batch_size / {count} rows per step."
        )
    return global_batch_size // count


def process_shard(data, process_index: int | None = None, process_count: int | None = None):
    """This process's rows of ``data``: rows ``p, p + P, ...``, padded to ``ceil(n / P)``.

    Padding rows repeat the shard's first row with ``mask`` 0, so every
    process holds as many rows and takes as many steps, and losses and metrics
    (masked sums) are those of the real rows. With ``shuffle=False`` global
    batch ``k`` holds the same rows as batch ``k`` of a single-process run.

    Args:
      data: ``(x, y)``, ``(x, y, weight)`` or a dict of arrays with equal rows.
      process_index, process_count: default this process and the process count.

    Returns:
      A dict of arrays with a float32 ``mask``.
    """
    from jaxnets.training.inputs import as_arrays

    p = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    arrays = as_arrays(data, need_targets=False)
    n = len(arrays["x"])
    if n < count:
        raise DataError(f"{n} rows cannot be shared by {count} processes; need at least one each.")
    return pad_to({k: v[p::count] for k, v in arrays.items()}, math.ceil(n / count))


def _digest(value) -> int:
    # zlib.crc32 is the same in every process (Python's hash() is salted).
    return zlib.crc32(json.dumps(value, sort_keys=True, default=str).encode()) & 0x7FFFFFFF


def _allgather(values: list[int]) -> np.ndarray:
    from jax.experimental import multihost_utils

    local = np.asarray(values, dtype=np.int32)
    return np.asarray(multihost_utils.process_allgather(local)).reshape(jax.process_count(), -1)


def check_same_data(arrays: dict, batch_size: int, *, local_devices: int = 1) -> None:
    """Raises `DataError` in every process unless all hold as many rows of the same layout.

    Processes with different row counts would take different numbers of steps
    and hang in a collective (or silently train on different global batches).
    """
    layout = sorted((k, v.shape[1:], v.dtype.str) for k, v in arrays.items())
    n = len(arrays["x"])
    table = _allgather([n, batch_size, local_devices, _digest(layout)])
    fields = ("rows", "batch size", "local devices", "array layout")
    for column, field in enumerate(fields):
        values = table[:, column]
        if (values != values[0]).any():
            per_process = ", ".join(f"process {i}: {v}" for i, v in enumerate(values.tolist()))
            if field == "array layout":
                per_process = f"this process (#{jax.process_index()}) has {layout}"
            raise DataError(
                f"processes disagree on their {field} ({per_process}). Every process must "
                "feed as many rows, in the same batch size and layout, or their steps diverge; "
                "split the data with jaxnets.parallel.process_shard (it pads shares to equal "
                "size with masked rows)."
            )


def assert_same_config(config: dict) -> None:
    """Raises `ConfigError` in every process unless all were started with the same ``config``."""
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        return
    try:
        multihost_utils.assert_equal(np.int32(_digest(config)), "configurations differ")
    except AssertionError:
        raise ConfigError(
            f"processes were started with different configurations; this process "
            f"(#{jax.process_index()}) has {config}. Start every process with the same options."
        ) from None
