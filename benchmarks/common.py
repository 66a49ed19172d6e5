"""What every benchmark contender shares: the four reference models, data, timing.

The models (Adam, softmax cross-entropy, float32):

=========== ============================================================ =====
name        model                                                        batch
=========== ============================================================ =====
mlp         MLP 784-128-10                                               128
cnn         the zoo CNN (Conv32-Pool-Conv64-Pool-Dense) on 28x28x1       128
lstm        LSTM, 128 units over 64 steps of 32 features, Dense 10       64
transformer 2 pre-LN encoder blocks, d=128, 4 heads, MLP 512, 64 tokens  32
            from a vocabulary of 256, mean pooling, Dense 10
=========== ============================================================ =====

Every contender trains on the same synthetic data (``make_data``) and is timed
after a warm-up that compiles, over whole steps with a host sync at the end.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable

import numpy as np

LEARNING_RATE = 1e-3


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    batch: int
    x_shape: tuple  # one example
    x_dtype: str
    steps: int  # steps per timed run (full mode)
    classes: int = 10


SPECS = {
    "mlp": Spec("mlp", 128, (784,), "float32", 200),
    "cnn": Spec("cnn", 128, (28, 28, 1), "float32", 40),
    "lstm": Spec("lstm", 64, (64, 32), "float32", 40),
    "transformer": Spec("transformer", 32, (64,), "int32", 40),
}


def jaxnets_module(name: str):
    """The jaxnets zoo module of a reference model (plain Flax Linen modules)."""
    from jaxnets import models

    if name == "mlp":
        return models.get("mlp_784_128_10", input_shape=(784,))
    if name == "cnn":
        return models.get("cnn")
    if name == "lstm":
        return models.get("lstm", hidden_size=128, input_shape=(64, 32))
    return models.get(
        "transformer", num_layers=2, d_model=128, num_heads=4, mlp_dim=512,
        vocab_size=256, input_shape=(64,), max_len=64,
    )  # fmt: skip


def make_data(spec: Spec, steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``steps`` full batches of inputs and labels (no padded batch)."""
    rng = np.random.default_rng(seed)
    n = spec.batch * steps
    if spec.x_dtype == "int32":
        x = rng.integers(0, 256, size=(n, *spec.x_shape)).astype(np.int32)
    else:
        x = rng.normal(size=(n, *spec.x_shape)).astype(np.float32)
    return x, rng.integers(0, spec.classes, size=n).astype(np.int32)


@dataclasses.dataclass
class Contender:
    """A way of training one model: ``setup()`` compiles, ``run()`` trains one epoch."""

    name: str
    setup: Callable[[], None]
    run: Callable[[], int | tuple[int, float]]  # steps taken (and seconds, if it timed them)
    times: list = dataclasses.field(default_factory=list)  # steps/s of each round
    error: str | None = None
    note: str = ""

    @property
    def steps_per_s(self) -> float | None:
        """Best of the rounds: on a shared machine the least disturbed run is the fairest."""
        return max(self.times) if self.times else None

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None


def interleave(contenders: list[Contender], rounds: int) -> None:
    """Runs each contender once per round, in turn, so background load hits all alike."""
    for c in contenders:
        try:
            c.setup()
        except Exception as e:  # a missing or broken contender must not sink the table
            c.error = f"{type(e).__name__}: {e}"[:200]
    for _ in range(rounds):
        for c in contenders:
            if c.error:
                continue
            start = time.perf_counter()
            try:
                result = c.run()  # steps, or (steps, seconds) timed by the contender itself
            except Exception as e:
                c.error = f"{type(e).__name__}: {e}"[:200]
                continue
            elapsed = time.perf_counter() - start
            steps, seconds = result if isinstance(result, tuple) else (result, elapsed)
            c.times.append(steps / seconds)


def matmul_peak_gflops(size: int = 1024, repeats: int = 20) -> float:
    """The machine's float32 matmul rate (jitted ``size``-square matmuls), best of 3."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((size, size), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            out = f(a)
        out.block_until_ready()
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9)
    return best


def load_average() -> str:
    try:
        import os

        return "/".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"
