"""PyTorch eager on CPU: the same four models, Adam, cross-entropy, a loss sync every 10 steps.

PyTorch trains in a child process of its own (``python -m benchmarks.bench_torch
--serve``), which the interleaved rounds ask for one epoch at a time: as a
PyTorch user runs it, without JAX's threads, and without sharing GNU OpenMP's
runtime with the oneDNN LSTM (`jaxnets.layers.lstm_onednn`). In one process the
two runtimes' teams outnumber the cores, OpenMP then sleeps between its parallel
regions, and both slowed down (PyTorch's LSTM from 109 to 44 steps/s).

Skipped (an error in the table) when torch is not installed
(``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import LEARNING_RATE, Contender, Spec


def build(name: str):
    import torch
    from torch import nn

    class Transformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.pos = nn.Embedding(256, 128), nn.Parameter(torch.zeros(64, 128))
            layer = nn.TransformerEncoderLayer(
                128, 4, 512, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
            )
            self.blocks = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.norm, self.head = nn.LayerNorm(128), nn.Linear(128, 10)

        def forward(self, tokens):
            h = self.blocks(self.embed(tokens) + self.pos)
            return self.head(self.norm(h).mean(1))

    class LSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.head = nn.LSTM(32, 128, batch_first=True), nn.Linear(128, 10)

        def forward(self, x):
            return self.head(self.lstm(x)[1][0][-1])

    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    if name == "cnn":  # NCHW
        return nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(1600, 10),
        )  # fmt: skip
    return LSTM() if name == "lstm" else Transformer()


def trainer(spec: Spec, x: np.ndarray, y: np.ndarray):
    """``(run, note)``: ``run(limit=None)`` trains one epoch (or ``limit`` steps) in this process."""
    import torch

    box = {}
    torch.manual_seed(0)
    xs = np.moveaxis(x, -1, 1) if spec.name == "cnn" else x  # NHWC -> NCHW
    box["x"], box["y"] = torch.from_numpy(np.ascontiguousarray(xs)), torch.from_numpy(y)
    if spec.name == "transformer":
        box["x"] = box["x"].long()
    box["y"] = box["y"].long()
    box["model"] = build(spec.name)
    box["opt"] = torch.optim.Adam(box["model"].parameters(), lr=LEARNING_RATE)

    def run(limit=None):
        model, opt, xs, ys, b = box["model"], box["opt"], box["x"], box["y"], spec.batch
        perm = torch.randperm(len(xs))
        steps = limit or len(xs) // b
        for i in range(steps):
            idx = perm[i * b : (i + 1) * b]
            logits = model(xs[idx])
            loss = torch.nn.functional.cross_entropy(logits, ys[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if (i + 1) % 10 == 0:
                loss.item()
        return steps

    # On a loaded machine torch's OpenMP barriers stall when a thread is descheduled;
    # keep whichever of 1 thread and one per core is faster here.
    timings = {}
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        start = time.perf_counter()
        run(limit=5)
        timings[threads] = time.perf_counter() - start
    best = min(timings, key=timings.get)
    torch.set_num_threads(best)
    return run, f"{best} thread(s)"


def serve(name: str, data: str) -> None:
    """The child: trains ``name`` on ``data`` (an .npz of x, y); one epoch per ``run`` line."""
    from benchmarks.common import SPECS

    arrays = np.load(data)
    run, note = trainer(SPECS[name], arrays["x"], arrays["y"])
    print(f"ready {note}", flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        start = time.perf_counter()
        steps = run()
        print(f"{steps} {time.perf_counter() - start}", flush=True)


def _child(name: str, spec: Spec, x: np.ndarray, y: np.ndarray, env: dict) -> Contender:
    box = {}

    def failed(what: str) -> RuntimeError:
        return RuntimeError(f"the PyTorch child {what}: {box['log'].read_text()[-500:]}")

    def ask(line: str) -> str:
        proc = box["proc"]
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        reply = proc.stdout.readline().strip()
        if not reply:
            raise failed("stopped")
        return reply

    def setup():
        if importlib.util.find_spec("torch") is None:  # not imported here: see the docstring
            raise ImportError("No module named 'torch': pip install -e '.[bench]'")

        folder = tempfile.mkdtemp(prefix="jaxnets-torch-")
        data, box["log"] = Path(folder) / "data.npz", Path(folder) / "stderr.txt"
        np.savez(data, x=x, y=y)
        cmd = [sys.executable, "-m", "benchmarks.bench_torch", "--serve", spec.name, str(data)]
        root = Path(__file__).resolve().parents[1]
        with open(box["log"], "w") as log:  # a file: a full stderr pipe would block the child
            box["proc"] = subprocess.Popen(
                cmd, cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                text=True, env={**os.environ, **env},
            )  # fmt: skip
        ready = box["proc"].stdout.readline().split(maxsplit=1)
        if not ready or ready[0] != "ready":
            raise failed("failed")
        contender.note = ready[1].strip()
        ask("run")  # warm-up epoch, as the in-process contenders have

    def run():
        steps, seconds = ask("run").split()
        return int(steps), float(seconds)

    contender = Contender(name, setup, run)
    return contender


# glibc tuned as `jaxnets.cpu_memory` tunes it for jaxnets' own steps (freed blocks stay
# mapped for the next step instead of being faulted in afresh), but more generously:
# jaxnets raises its mmap threshold only to fit its largest heap; PyTorch's blocks are
# unknown here, so every block up to 256 MiB stays mapped.
TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "268435456", "MALLOC_TRIM_THRESHOLD_": "1073741824"}


def contenders(spec: Spec, x: np.ndarray, y: np.ndarray) -> list[Contender]:
    """PyTorch with glibc's defaults (``torch``) and with `TUNED_MALLOC` (``torch-malloc``)."""
    return [_child("torch", spec, x, y, {}), _child("torch-malloc", spec, x, y, TUNED_MALLOC)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="PyTorch child of benchmarks.run_all")
    parser.add_argument("--serve", nargs=2, metavar=("MODEL", "DATA"), required=True)
    serve(*parser.parse_args().serve)
