"""A command-line run's place in a data-parallel job: its engine, its data share, its voice.

`start` reads the options ``jaxnets train`` takes (``--devices``,
``--engine``, ``--accumulate``, ``--coordinator``, ``--num-processes``,
``--process-id``, ``--distributed``), starts the multi-process runtime when
they or the ``JAXNETS_*`` variables ask for it, builds the engine and checks
that every process was started with the same configuration. The `Run` it
returns gives each process its rows (`Run.shard`) and its share of the batch
(`Run.batch_size`), and lets only process 0 print.

Example:
  >>> import argparse
  >>> run = start(argparse.Namespace(devices=4, engine="jit", accumulate=1), {"lr": 0.1})
  >>> run.describe(), run.batch_size(32), run.is_main
  ('cpu, jit engine on 4 device(s)', 32, True)
"""

from __future__ import annotations

import dataclasses

import jax

from jaxnets.parallel import distributed
from jaxnets.parallel.engines import make_engine


@dataclasses.dataclass
class Run:
    """This process's view of the job (see `start`)."""

    engine: object
    process_index: int = 0
    process_count: int = 1

    @property
    def is_main(self) -> bool:
        """Process 0: the one that prints and writes files."""
        return self.process_index == 0

    def shard(self, data):
        """This process's rows of ``(x, y)`` as a dict (all of them in a single-process run)."""
        if data is None:
            return None
        if self.process_count == 1:
            from jaxnets.training.inputs import as_arrays

            return as_arrays(data, need_targets=False)
        return distributed.process_shard(data, self.process_index, self.process_count)

    def batch_size(self, global_batch_size: int) -> int:
        """Rows this process feeds per step of a ``global_batch_size`` batch."""
        return distributed.local_batch_size(global_batch_size)

    def verbose(self, level):
        """The progress level for this process: silent except in process 0."""
        return level if self.is_main else 0

    def print(self, *args, **kwargs) -> None:
        """``print`` in process 0 only."""
        if self.is_main:
            print(*args, **kwargs)

    def describe(self) -> str:
        """The platform and engine, e.g. ``'gpu, jit engine on 8 device(s) in 2 processes'``."""
        platform = jax.devices()[0].platform
        describe = getattr(self.engine, "describe", None)
        return f"{platform}, {describe()}" if describe else platform


def _wants_processes(args) -> bool:
    given = (getattr(args, k, None) for k in ("coordinator", "num_processes", "process_id"))
    return (
        any(v is not None for v in given)
        or bool(getattr(args, "distributed", False))
        or distributed.requested()
    )


def start(args, config: dict | None = None) -> Run:
    """Starts the run ``args`` describes (see the module docstring); must precede other JAX work.

    ``devices`` may be None (one device; every device of every process in a
    multi-process run), ``'all'``, or a count.
    """
    if _wants_processes(args):
        distributed.initialize(
            getattr(args, "coordinator", None),
            getattr(args, "num_processes", None),
            getattr(args, "process_id", None),
        )
    devices = getattr(args, "devices", None)
    if devices is None:
        devices = 1 if jax.process_count() == 1 else "all"
    kind = getattr(args, "engine", None) or "jit"
    accumulate = getattr(args, "accumulate", None) or 1
    engine = make_engine(None if devices == "all" else devices, kind, accumulate=accumulate)
    if config is not None:
        options = {"devices": str(devices), "engine": kind, "accumulate": accumulate}
        distributed.assert_same_config({**config, **options})
    return Run(engine, jax.process_index(), jax.process_count())
