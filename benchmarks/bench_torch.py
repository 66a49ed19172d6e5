"""PyTorch eager on CPU: the same four models, Adam, cross-entropy, a loss sync every 10 steps.

Skipped (an error in the table) when torch is not installed
(``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import os
import time

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


def contenders(spec: Spec, x: np.ndarray, y: np.ndarray) -> list[Contender]:
    box = {}

    def setup():
        import torch

        torch.manual_seed(0)
        xs = np.moveaxis(x, -1, 1) if spec.name == "cnn" else x  # NHWC -> NCHW
        box["x"], box["y"] = torch.from_numpy(np.ascontiguousarray(xs)), torch.from_numpy(y)
        if spec.name == "transformer":
            box["x"] = box["x"].long()
        box["y"] = box["y"].long()
        box["model"] = build(spec.name)
        box["opt"] = torch.optim.Adam(box["model"].parameters(), lr=LEARNING_RATE)
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
        contender.note = f"{best} thread(s)"

    def run(limit=None):
        import torch

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

    contender = Contender("torch", setup, run)
    return [contender]
