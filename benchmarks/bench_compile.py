"""Compile seconds with a cold and a warm persistent cache, and start-up to the first step.

Each measurement runs in a fresh Python process whose ``JAXNETS_COMPILE_CACHE``
points at a new folder (cold) and then at the same folder again (warm).

* ``compile``: seconds to compile the per-step and the fused training programs
  of a reference model (``python -m benchmarks.bench_compile --child NAME``).
* ``start``: seconds from launching ``jaxnets train`` to its pre-flight report,
  which it prints when the first step's program is ready (imports, data,
  initialization and compilation included); medians of a few cold/warm pairs.
  The warm run finds what the cold one left in that folder: JAX's persistent
  cache and the executables ``jaxnets train`` stores (`jaxnets.executable_store`).
  ``imports`` is launching Python and importing what ``jaxnets train`` imports
  (JAX, Flax, Optax, jaxnets), timed the same way: no warm start can go under it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env(cache: str) -> dict:
    env = {**os.environ, "JAXNETS_COMPILE_CACHE": cache, "PYTHONUNBUFFERED": "1"}
    # A user's second run reads jaxnets' bytecode from __pycache__; a sandbox that
    # sets this variable would make every run compile the package's sources again.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def child(name: str) -> None:
    """Compiles ``name``'s per-step and fused programs; prints their compile seconds as JSON."""
    from benchmarks.bench_jaxnets import make_state
    from benchmarks.common import SPECS, make_data
    from jaxnets.compile import ensure_default_cache
    from jaxnets.training import fused
    from jaxnets.training.engine import default_engine

    ensure_default_cache()
    spec = SPECS[name]
    x, y = make_data(spec, 2)
    state = make_state(spec, x)
    out = {}
    for label, fuse in (("step", None), ("fused", "epoch")):
        feed = fused.Feed({"x": x, "y": y}, spec.batch, 0, default_engine(), fuse=fuse)
        unit = next(feed.epoch(0))[1]
        zeros = feed.zero_sums(state, unit)
        start = time.perf_counter()
        feed.runner.compile_for(state, zeros, *unit)
        out[label] = time.perf_counter() - start
    print(json.dumps(out))


def compile_seconds(names, timeout: float = 600) -> dict:
    """``{name: {"cold": {...}, "warm": {...}}}`` from two child processes per model."""
    out = {}
    for name in names:
        with tempfile.TemporaryDirectory() as cache:
            out[name] = {}
            for which in ("cold", "warm"):
                proc = subprocess.run(
                    [sys.executable, "-m", "benchmarks.bench_compile", "--child", name],
                    cwd=ROOT, env=_env(cache), capture_output=True, text=True, timeout=timeout,
                )  # fmt: skip
                lines = proc.stdout.strip().splitlines()
                out[name][which] = json.loads(lines[-1]) if proc.returncode == 0 else None
    return out


TRAIN_ARGS = ["train", "--model", "mlp_784_64_64_10", "--dataset", "digits", "--epochs", "1"]


def time_to_first_step(cache: str, timeout: float = 600, args=None) -> float | None:
    """Seconds from launching ``jaxnets train`` to its pre-flight report (None if it failed).

    ``args``: the command's arguments after ``jaxnets`` (default `TRAIN_ARGS`).
    """
    code = ["-c", "import sys; from jaxnets.cli import main; sys.exit(main())"]
    return _seconds_to_line(code + list(args or TRAIN_ARGS), cache, "pre-flight", timeout)


def _seconds_to_line(args: list, cache: str, prefix: str, timeout: float) -> float | None:
    """Seconds from launching ``python *args`` to its first output line starting with ``prefix``.

    None if the process failed. It runs to its end, so runs do not overlap.
    """
    start, seen = time.perf_counter(), None
    with subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=_env(cache), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    ) as proc:  # fmt: skip
        for line in proc.stdout:
            if seen is None and line.startswith(prefix):
                seen = time.perf_counter() - start
        proc.wait(timeout=timeout)
    return seen if proc.returncode == 0 else None


def import_seconds(timeout: float = 600) -> float | None:
    """Seconds from launching Python to having imported ``jaxnets train``'s modules, as it does."""
    code = ["-c", "from jaxnets.cli import import_runner; import_runner(); print('imported')"]
    return _seconds_to_line(code, "off", "imported", timeout)  # importing reads no cache


def _median(values: list) -> float | None:
    return None if None in values else statistics.median(values)  # None: a run failed


def start_times(rounds: int = 3, args=None) -> dict:
    """Medians over ``rounds`` (cold, warm) pairs, each pair on a new cache folder.

    Pairs alternate cold and warm, so background load on a shared machine hits
    both alike; a single pair can be off by a second either way. ``args``: the
    ``jaxnets`` command's arguments (default `TRAIN_ARGS`: an MLP on digits).
    """
    args = list(args or TRAIN_ARGS)
    cold, warm, imports = [], [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as cache:
            cold.append(time_to_first_step(cache, args=args))
            warm.append(time_to_first_step(cache, args=args))
        imports.append(import_seconds())
    return {
        "command": "jaxnets " + " ".join(args),
        "cold": _median(cold),
        "warm": _median(warm),
        "imports": _median(imports),
        "rounds": {"cold": cold, "warm": warm, "imports": imports},
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2])
    else:
        print(json.dumps({"start": start_times(), "compile": compile_seconds(["mlp"])}, indent=1))
