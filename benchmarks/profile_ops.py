"""Where a training step's time goes on XLA:CPU: a per-instruction profile of `fit`.

  python -m benchmarks.profile_ops --model cnn              # fit(fuse="epoch")
  python -m benchmarks.profile_ops --model mlp --fuse none  # the per-step fit

It turns on XLA:CPU's per-instruction trace events (``XLA_FLAGS=
--xla_cpu_enable_xprof_traceme=true``, set before JAX starts), trains a
reference model of `benchmarks.common` with `fit` for one epoch to compile and
warm up, records the next epochs with `jax.profiler.trace`, and prints each HLO
instruction's time per training step with its line of the compiled program.
These are the profiles behind the README's Performance notes (the CNN's im2col
concatenation and gradient product, the LSTM's per-step products).

Each time is the wall time of the instruction on the thread that ran it.
Instructions that run side by side share the two cores, so each one's time
includes the other's load, and a product XLA hands to Eigen's thread pool can
return before the pool has finished it: the CNN's weight-gradient product
(571 MFLOP, about 5 ms run alone) shows as ~0.1 ms while the input-gradient
product beside it shows 4.4 ms against 2.4 ms run alone. Read the shares as
where the step waits, and compare them between versions of one program.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

_TRACE_FLAG = "--xla_cpu_enable_xprof_traceme=true"
_CONTROL_FLOW = re.compile(r"\b(while|conditional|call)\(")


def _instructions(hlo_text: str) -> dict:
    """``{instruction name: its HLO line, shortened}`` of a compiled program's text.

    A fusion is described by its kind and the root of the computation it calls
    (for a library fusion, the dot it runs).
    """
    out, roots, computation = {}, {}, None
    for line in hlo_text.splitlines():
        if head := re.match(r"(?:ENTRY )?%([\w.\-]+) .*\{$", line):
            computation = head.group(1)
        elif m := re.match(r"\s*(ROOT )?%([\w.\-]+) = (.*)", line):
            body = re.sub(r", (metadata|backend_config|frontend_attributes)=.*", "", m.group(3))
            out.setdefault(m.group(2), body)
            if m.group(1):
                roots[computation] = body
    for name, body in out.items():
        called, kind = re.search(r"calls=%([\w.\-]+)", body), re.search(r"kind=(\w+)", body)
        if called and kind:  # a fusion: what it computes says more than its operands
            root = re.sub(
                r"%([\w.\-]+)",
                lambda m: _param_shape(out, m.group(1)),
                roots.get(called.group(1), "?"),
            )
            out[name] = f"{kind.group(1)} fusion, root {root}"
    return out


def _param_shape(instructions: dict, name: str) -> str:
    """A fused computation's parameter as its shape (``f32[64,128]``), other operands by name."""
    body = instructions.get(name, "")
    return body.split("{")[0].split(" ")[0] if " parameter(" in body else f"%{name}"


def _train_program_text(name: str) -> str:
    """The compiled text of the training program ``fit`` compiled last under ``name``."""
    from jaxnets import compile as compile_lib

    found = [c for c, rep in compile_lib._EXECUTABLES.values() if rep.name == name]
    if not found:
        raise RuntimeError(f"fit compiled no program named {name!r}")
    return found[-1].as_text()


def profile(model: str, fuse: str | None, epochs: int = 2) -> dict:
    """Per-instruction seconds per step: ``{"rows": [...], "wall_per_step": s, ...}``."""
    import jax  # here, not at the top: XLA_FLAGS must be set before JAX starts

    from benchmarks.bench_jaxnets import make_state
    from benchmarks.common import SPECS, make_data
    from jaxnets.training import fit

    if jax.default_backend() != "cpu":
        raise RuntimeError("the per-instruction trace events are XLA:CPU's")
    spec = SPECS[model]
    x, y = make_data(spec, spec.steps)
    state = make_state(spec, x)
    kwargs = dict(batch_size=spec.batch, verbose=0, fuse=fuse)
    state, _ = fit(state, (x, y), epochs=1, **kwargs)  # compiles and warms up
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder):
            start = time.perf_counter()
            state, _ = fit(state, (x, y), epochs=epochs, **kwargs)
            wall = time.perf_counter() - start
        (path,) = glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)
        data = jax.profiler.ProfileData.from_file(path)
        hlo = _instructions(_train_program_text("fused epoch" if fuse else "train step"))
        seconds, calls = collections.Counter(), collections.Counter()
        for plane in data.planes:
            for line in plane.lines:
                for event in line.events:
                    # The program's instructions; a loop or branch would count its body twice.
                    if event.name in hlo and not _CONTROL_FLOW.search(hlo[event.name]):
                        seconds[event.name] += event.duration_ns * 1e-9
                        calls[event.name] += 1
    steps = epochs * spec.steps
    rows = [
        {"op": op, "s": s / steps, "calls": calls[op] / steps, "hlo": hlo[op]}
        for op, s in seconds.most_common()
    ]
    return {"model": model, "fuse": fuse, "rows": rows, "wall_per_step": wall / steps}


def table(result: dict, top: int = 25) -> str:
    busy = sum(r["s"] for r in result["rows"])
    lines = [
        f"{result['model']} (fuse={result['fuse']}): wall {result['wall_per_step'] * 1e6:.0f} us "
        f"per step, instructions {busy * 1e6:.0f} us (all threads)",
        "| instruction | us/step | % | calls/step | HLO |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"][:top]:
        lines.append(
            f"| {r['op']} | {r['s'] * 1e6:.1f} | {100 * r['s'] / busy:.1f} | {r['calls']:.1f} "
            f"| `{_short(r['hlo'])}` |"
        )
    # Instructions of one kind (XLA numbers them: maximum_slice_fusion.1, .2, ...).
    kinds, count = collections.Counter(), collections.Counter()
    for r in result["rows"]:
        kind = re.sub(r"\.\d+$", "", r["op"])
        kinds[kind] += r["s"]
        count[kind] += 1
    lines.append("\nby kind: " + ", ".join(
        f"{k} x{count[k]} {100 * v / busy:.0f}%" for k, v in kinds.most_common(8)
    ))  # fmt: skip
    return "\n".join(lines)


def _short(hlo: str, width: int = 160) -> str:
    """An HLO line without layouts, cut to ``width``."""
    text = re.sub(r"(?<=\])\{[\d,]*\}", "", hlo)  # layouts follow shapes: f32[2,3]{1,0}
    return text if len(text) <= width else text[: width - 3] + "..."


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn", help="mlp, cnn, lstm or transformer")
    parser.add_argument("--fuse", default="epoch", choices=["epoch", "none"])
    parser.add_argument("--epochs", type=int, default=2, help="epochs recorded")
    parser.add_argument("--top", type=int, default=25, help="rows printed")
    args = parser.parse_args(argv)
    if "jax" in sys.modules and _TRACE_FLAG not in os.environ.get("XLA_FLAGS", ""):
        raise RuntimeError(f"set XLA_FLAGS={_TRACE_FLAG} before JAX is imported")
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_TRACE_FLAG}".strip()
    fuse = None if args.fuse == "none" else args.fuse
    print(table(profile(args.model, fuse, args.epochs), args.top))


if __name__ == "__main__":
    main()
