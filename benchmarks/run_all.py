"""Runs every benchmark in one process and writes a table, JSON and a plot.

  python -m benchmarks.run_all            # full run (about 10-20 minutes on 2 CPU cores)
  python -m benchmarks.run_all --quick    # smoke run: fewer steps, one round, MLP only

Contenders per model, interleaved round by round so background load hits all
of them alike (best steps/s over the rounds; medians in the JSON): ``hand`` (hand-written Flax +
Optax jit loop, host batches: the floor), ``hand-dev`` (the same with the data
on the device), ``hand-scan`` (that step in one ``lax.scan`` per epoch), ``jaxnets`` (per-step ``fit``), ``jaxnets-fused``
(``fit(fuse="epoch")``), ``torch`` (PyTorch eager, in a process of its own, with
glibc's allocator defaults) and ``torch-malloc`` (the same with glibc tuned to
keep freed blocks up to 256 MiB mapped, `benchmarks.bench_torch.TUNED_MALLOC`), and ``keras-spe1`` /
``keras-spe32`` (Keras 3, JAX backend) when installed (``pip install -e '.[bench]'``).
``best/torch`` is the faster jaxnets mode against the faster PyTorch.
Results go to ``benchmarks/results/`` (``results.json``, ``results.png``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from benchmarks import (
    bench_compile,
    bench_handwritten,
    bench_jaxnets,
    bench_keras,  # sets KERAS_BACKEND=jax before keras is imported
    bench_population,
    bench_torch,
)
from benchmarks.common import SPECS, interleave, load_average, make_data, matmul_peak_gflops

RESULTS = Path(__file__).resolve().parent / "results"
ORDER = [
    "hand",
    "hand-dev",
    "hand-scan",
    "jaxnets",
    "jaxnets-fused",
    "torch",
    "torch-malloc",
    "keras-spe1",
    "keras-spe32",
]


def step_flops(name: str, x, y) -> float:
    """FLOPs of one jaxnets training step (XLA cost analysis of the compiled step)."""
    from jaxnets.training import fused
    from jaxnets.training.engine import default_engine

    spec = SPECS[name]
    state = bench_jaxnets.make_state(spec, x)
    feed = fused.Feed({"x": x[: spec.batch], "y": y[: spec.batch]}, spec.batch, 0, default_engine())
    unit = next(feed.epoch(0))[1]
    feed.runner.compile_for(state, feed.zero_sums(state, unit), *unit)
    return feed.report.programs[0].flops


def bench_models(names, rounds: int, quick: bool, only=None) -> dict:
    out = {}
    for name in names:
        spec = SPECS[name]
        steps = max(10, spec.steps // 5) if quick else spec.steps
        x, y = make_data(spec, steps)
        contenders = []
        for module in (bench_handwritten, bench_jaxnets, bench_torch, bench_keras):
            contenders += module.contenders(spec, x, y)
        contenders = [c for c in contenders if not only or c.name in only]
        interleave(contenders, rounds)
        flops = step_flops(name, x, y)
        out[name] = {
            "batch": spec.batch,
            "steps_per_run": steps,
            "flops_per_step": flops,
            "steps_per_s": {c.name: c.steps_per_s for c in contenders},
            "median_steps_per_s": {c.name: c.median for c in contenders},
            "all_rounds": {c.name: c.times for c in contenders},
            "errors": {c.name: c.error for c in contenders if c.error},
            "notes": {c.name: c.note for c in contenders if c.note},
        }
        if name == "cnn":
            out[name]["fused_uses_im2col"] = bench_jaxnets.fused_program_uses_im2col(spec, x, y)
        print(f"{name}: " + ", ".join(f"{c.name} {c.steps_per_s or 0:.1f}" for c in contenders))
    return out


def _ratio(rate: dict, a: str, b: str) -> str:
    return f"{rate[a] / rate[b]:.2f}x" if rate.get(a) and rate.get(b) else "-"


def table(results: dict) -> str:
    peak = results["matmul_peak_gflops"]
    head = f"| model | {' | '.join(ORDER)} | jaxnets/hand | fused/hand | fused/hand-scan | "
    head += "best/torch | best GFLOP/s (% peak) |"
    lines = [head, "|" + "---|" * (len(ORDER) + 6)]
    for name, r in results["models"].items():
        rate = r["steps_per_s"]
        cells = [f"{rate[c]:.1f}" if rate.get(c) else "-" for c in ORDER]
        best = max(rate.get("jaxnets") or 0, rate.get("jaxnets-fused") or 0)
        torch = max(rate.get("torch") or 0, rate.get("torch-malloc") or 0)
        vs_torch = f"{best / torch:.2f}x" if best and torch else "-"
        gflops = best * r["flops_per_step"] / 1e9
        lines.append(
            f"| {name} | {' | '.join(cells)} | {_ratio(rate, 'jaxnets', 'hand')} | "
            f"{_ratio(rate, 'jaxnets-fused', 'hand')} | {_ratio(rate, 'jaxnets-fused', 'hand-scan')} | "
            f"{vs_torch} | {gflops:.1f} ({100 * gflops / peak:.0f}%) |"
        )
    lines.append(f"\nsteps/s, best of interleaved rounds; float32 matmul peak {peak:.0f} GFLOP/s")
    pop = results.get("population")
    if pop:
        seq = pop["sequential_fit"]
        rows = ", ".join(f"N={n}: {v:.0f} ({v / seq:.1f}x)" for n, v in pop["population"].items())
        lines.append(
            f"population ({pop['member']}), member-steps/s: sequential fit {seq:.0f}, "
            f"sequential fused {pop['sequential_fused']:.0f}; {rows}"
        )
    comp = results.get("compile")
    if comp:
        for name, c in comp.items():
            if c.get("cold") and c.get("warm"):
                lines.append(
                    f"compile {name}: per-step {c['cold']['step']:.2f}s cold / "
                    f"{c['warm']['step']:.2f}s warm, fused {c['cold']['fused']:.2f}s cold / "
                    f"{c['warm']['fused']:.2f}s warm"
                )
    start = results.get("start")
    if start and start.get("cold") and start.get("warm"):
        lines.append(
            f"start to first step ({start['command']}): {start['cold']:.1f}s cold, "
            f"{start['warm']:.1f}s warm ({start['cold'] / start['warm']:.1f}x)"
            + (f"; imports alone {start['imports']:.2f}s" if start.get("imports") else "")
        )
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results["models"])
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(ORDER)
    for k, name in enumerate(ORDER):
        hand = [results["models"][m]["steps_per_s"].get("hand") or 1 for m in models]
        vals = [(results["models"][m]["steps_per_s"].get(name) or 0) / h for m, h in zip(models, hand, strict=True)]  # fmt: skip
        ax.bar([i + k * width for i in range(len(models))], vals, width, label=name)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(models))], models)
    ax.set_ylabel("steps/s relative to the hand-written loop")
    ax.legend(ncols=4, fontsize=8)
    ax.set_title(results["machine"])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: MLP only, small")
    parser.add_argument("--models", nargs="*", default=None, help=f"subset of {list(SPECS)}")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5)")
    parser.add_argument("--out", default=str(RESULTS), help="folder for results.json/png")
    parser.add_argument("--skip", nargs="*", default=[], help="population, compile, start")
    parser.add_argument("--contenders", nargs="*", default=None, help=f"subset of {ORDER}")
    args = parser.parse_args(argv)
    names = args.models or (["mlp"] if args.quick else list(SPECS))
    rounds = args.rounds or (1 if args.quick else 5)
    # jaxnets keeps freed host memory for reuse (process-wide, at its first compile on
    # CPU); set it before any contender runs, so every one of them runs under it.
    from jaxnets import cpu_memory

    cpu_memory.ensure_malloc_reuse()
    started = time.time()
    results = {
        "machine": f"{_cpu_name()}, {_cores()} cores, load {load_average()} at start",
        "matmul_peak_gflops": matmul_peak_gflops(512 if args.quick else 1024),
    }
    results["models"] = bench_models(names, rounds, args.quick, args.contenders)
    if "population" not in args.skip:
        sizes = (1, 4) if args.quick else (1, 4, 16, 64)
        results["population"] = bench_population.run(sizes, steps=10 if args.quick else 50)
    if "compile" not in args.skip:
        results["compile"] = bench_compile.compile_seconds(names[:1] if args.quick else names)
    if "start" not in args.skip:
        results["start"] = bench_compile.start_times()
    results["load_at_end"] = load_average()
    results["seconds"] = time.time() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    text = table(results)
    (out / "results.md").write_text(text + "\n")
    try:
        plot(results, out / "results.png")
    except ImportError:
        print("matplotlib is not installed: no plot")
    print(text)
    return results


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
    main()
