"""A small training run for the kill-and-resume tests (run with ``sys.executable``).

  python resume_run.py OUT [--workdir DIR] [--sleep S] [--die-in-save N]

Trains a Dense-BatchNorm-Dropout-Dense net for 4 epochs of 7 steps on fixed
synthetic data, checkpointing every 3 steps when ``--workdir`` is given (so
most checkpoints are mid-epoch), and writes the final parameters and history to
``OUT`` (``.npz`` + ``.json``). ``--sleep`` slows each step so a test can kill
the process at a step of its choosing; ``--die-in-save N`` kills the process
itself (SIGKILL) during the N-th checkpoint save, after the data is written but
before Orbax commits the step by renaming its temporary folder.
"""

import argparse
import json
import os
import signal
import time

import flax.linen as nn
import numpy as np

from jaxnets.callbacks import Callback
from jaxnets.checkpoint.structure import flatten
from jaxnets.training import create_train_state, fit


class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(16, use_bias=False)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.Dropout(0.3, deterministic=not train)(nn.relu(x))
        return nn.Dense(3)(x)


class Slow(Callback):
    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_train_batch_begin(self, batch, logs=None):
        time.sleep(self.seconds)


class EpochCounter(Callback):
    """Stateful: resets in on_train_begin like Keras callbacks; must survive resuming."""

    def on_train_begin(self, logs=None):
        self.epochs_seen = 0

    def on_epoch_end(self, epoch, logs=None):
        self.epochs_seen += 1

    def get_state(self):
        return {"epochs_seen": self.epochs_seen}

    def set_state(self, state):
        self.epochs_seen = state["epochs_seen"]


def die_in_save(n):
    from orbax.checkpoint._src.path import atomicity

    original = atomicity.AtomicRenameTemporaryPath.finalize
    seen = []

    async def finalize(self):
        if self.get_final().name.isdigit():
            seen.append(self.get_final().name)
            if len(seen) == n:
                os.kill(os.getpid(), signal.SIGKILL)
        return await original(self)

    atomicity.AtomicRenameTemporaryPath.finalize = finalize


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--workdir", default=None)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--die-in-save", type=int, default=0)
    p.add_argument("--fuse", action="store_true", help="fused epochs, scans of 3 steps")
    args = p.parse_args()
    if args.die_in_save:
        die_in_save(args.die_in_save)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 6)).astype(np.float32)  # 7 steps of 16 (the last padded)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1).astype(np.int32)
    state = create_train_state(Net(), "adam", x[:1], learning_rate=3e-3, seed=1)
    counter = EpochCounter()
    callbacks = [counter] + ([Slow(args.sleep)] if args.sleep else [])
    kwargs = {"workdir": args.workdir, "save_every": 3, "keep": 2} if args.workdir else {}
    if args.fuse:
        kwargs.update(fuse="epoch", chunk_steps=3)
    state, history = fit(
        state, (x, y), epochs=4, batch_size=16, seed=5, verbose=0, callbacks=callbacks, **kwargs
    )
    np.savez(args.out + ".npz", **{k: np.asarray(v) for k, v in flatten(state.params).items()})
    history = {k: [float(v) for v in vs] for k, vs in history.items()}
    history["epochs_seen"] = counter.epochs_seen
    with open(args.out + ".json", "w") as f:
        json.dump(history, f)


if __name__ == "__main__":
    main()
