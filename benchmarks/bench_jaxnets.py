"""jaxnets: the per-step ``fit`` and the fused ``fit(fuse="epoch")``.

Each timed run is the second epoch of a two-epoch ``fit``, timed between the
ends of epochs 1 and 2 by a callback (``fit`` syncs with the host at each epoch
end), so the one-time work of a call (input checks, placing the dataset)
stays out of the steady-state rate, as the warm-up keeps compilation out (and
with it, on the first run on a machine, `jaxnets.cpu_dots` measuring which
matrix-multiply library the program should use). The
per-epoch work (drawing and placing the epoch's order, fresh metric sums, the
epoch-end fetch and metrics) is inside it, as the permutation and the final
sync are inside the hand-written loops' time.

Data feeding matches ``hand-dev`` in `benchmarks.bench_handwritten`: the
per-step ``fit`` keeps the dataset on the device and gathers each batch inside
its jitted step (one dispatch per step, metric sums included), sending only the
step number; ``hand`` gathers on the host instead. With ``verbose=0`` and no
callback reading batch logs, ``fit`` fetches metrics at epoch ends only, where
the hand-written loops read the loss every 10 steps (on a CPU that sync costs
little: the next step is queued behind the running one either way).
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import LEARNING_RATE, Contender, Spec, jaxnets_module
from jaxnets.callbacks import Callback
from jaxnets.training import create_train_state, fit


class EpochTimer(Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.ends = getattr(self, "ends", []) + [time.perf_counter()]


def make_state(spec: Spec, x):
    return create_train_state(
        jaxnets_module(spec.name), "adam", x[:1], learning_rate=LEARNING_RATE, metrics=("accuracy",)
    )


def contenders(spec: Spec, x: np.ndarray, y: np.ndarray) -> list[Contender]:
    steps = len(x) // spec.batch
    out = []
    for name, fuse in (("jaxnets", None), ("jaxnets-fused", "epoch")):
        box = {}

        def run(fuse=fuse, box=box):
            timer = EpochTimer()
            box["state"], _ = fit(
                box["state"], (x, y), epochs=2, batch_size=spec.batch, verbose=0,
                callbacks=[timer], fuse=fuse,
            )  # fmt: skip
            return steps, timer.ends[1] - timer.ends[0]

        def setup(fuse=fuse, box=box, run=run):
            box["state"] = make_state(spec, x)
            run()

        out.append(Contender(name, setup, run))
    return out


def fused_program_uses_im2col(spec: Spec, x, y) -> bool:
    """True when the fused epoch of ``spec`` has no XLA convolution (im2col on CPU)."""
    import jax

    from jaxnets.training import fused

    state = make_state(spec, x[: spec.batch])
    data = {"x": x[: 2 * spec.batch], "y": y[: 2 * spec.batch]}
    plan = fused.epoch_plan(2 * spec.batch, spec.batch, 0, 0)
    zeros = fused.zero_sums(state, data, plan)
    text = jax.jit(fused.train_chunk).lower(state, zeros, data, plan).as_text()
    return "convolution" not in text
