"""Shared helpers of the studies: command line, dataset loading, JSON, plots.

Every study is run as ``python experiments/<study>/run.py [--quick] [--seeds 0 1 2]
[--out DIR]``. Full runs write into their own folder; ``--quick`` runs write to a
fresh temporary folder unless ``--out`` is given, so a smoke test never overwrites
the committed results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Exit status of a study whose dataset is missing (the test suite skips on it).
SKIP_EXIT = 77


def parser(description: str, seeds=(0, 1, 2)) -> argparse.ArgumentParser:
    """An argument parser with the options every study shares."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny run for smoke tests (seconds)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(seeds), help="seeds to run")
    p.add_argument("--out", type=Path, default=None, help="output folder")
    return p


def out_dir(args, study_file: str) -> Path:
    """``--out``, else a temp folder for ``--quick``, else the study's own folder."""
    if args.out is not None:
        out = args.out
    elif args.quick:
        out = Path(tempfile.mkdtemp(prefix="jaxnets_quick_"))
    else:
        out = Path(study_file).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    return out


def load(name: str, **kwargs):
    """`jaxnets.data.load`, exiting with `SKIP_EXIT` and the install hint if files are missing."""
    from jaxnets import data
    from jaxnets.errors import DatasetNotFoundError

    try:
        return data.load(name, **kwargs)
    except DatasetNotFoundError as err:
        print(f"SKIP: dataset {name!r} is missing: {err}", file=sys.stderr)
        sys.exit(SKIP_EXIT)


def machine() -> dict:
    """What the run ran on, including how loaded the machine was when it started."""
    import jax

    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "jax": jax.__version__,
        "backend": jax.default_backend(),
    }


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return round(float(obj), 6)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_json(obj, path: Path) -> Path:
    """Writes ``obj`` (numpy values allowed) as indented JSON."""
    path.write_text(json.dumps(_plain(obj), indent=1) + "\n")
    return path


def mean_std(values) -> dict:
    """``{'mean', 'std', 'values'}`` of a list of numbers (population std)."""
    arr = np.asarray(values, np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "values": arr.tolist()}


class Timer:
    """Wall-clock seconds since creation (``timer()``)."""

    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return round(time.perf_counter() - self.start, 1)


def pyplot():
    """matplotlib's pyplot on the headless Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(curves: dict, keys, path: Path, title: str = "", xlabel: str = "epoch") -> Path:
    """One panel per key; one line per run. ``curves``: label -> history dict of lists."""
    plt = pyplot()
    keys = list(keys)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for label, hist in curves.items():
            if key in hist:
                ax.plot(np.arange(1, len(hist[key]) + 1), hist[key], label=label, lw=1.2)
        ax.set_xlabel(xlabel)
        ax.set_title(key)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_confusion(matrix, class_names, path: Path, title: str = "") -> Path:
    """A confusion matrix (rows true, columns predicted) with counts in the cells."""
    return plot_confusions({title: matrix}, class_names, path)


def plot_confusions(matrices: dict, class_names, path: Path) -> Path:
    """One confusion-matrix panel per entry of ``matrices`` (title -> matrix), side by side."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(matrices), figsize=(5.2 * len(matrices), 4.6), squeeze=False)
    ticks = np.arange(len(class_names))
    for ax, (title, matrix) in zip(axes[0], matrices.items(), strict=True):
        m = np.asarray(matrix)
        ax.imshow(m, cmap="Blues")
        ax.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(ticks, class_names, fontsize=7)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if m[i, j]:
                    color = "white" if m[i, j] > m.max() / 2 else "black"
                    ax.text(
                        j, i, f"{m[i, j]:.0f}", ha="center", va="center", fontsize=6, color=color
                    )
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
