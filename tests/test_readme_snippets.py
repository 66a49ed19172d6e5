"""The README's code runs as written: its Python blocks, its commands' flags, its numbers.

Every fenced ``python`` block of README.md is listed below by its first line, either
with the test that runs it or with the reason it cannot run as written, so a new block
cannot slip in untested and an API change that breaks an example fails here. Blocks
run with fewer epochs than they show (the substitutions are checked to apply, so a
changed snippet fails loudly rather than running at full length).

The ``jaxnets`` commands of the README (code blocks and inline code) are parsed with
the command's own parser, their ``--model``/``--dataset`` names checked against the zoo
and the dataset registry; the ``python`` commands' scripts and modules must exist and
know the flags the README gives them.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxnets
from jaxnets import data, models
from jaxnets.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# README files whose commands a user copies (the experiments' own READMEs included).
COMMAND_DOCS = [README, *sorted((ROOT / "experiments").glob("**/README.md"))]


def fenced_blocks(path: Path, language: str) -> list[str]:
    """The bodies of ``path``'s fenced code blocks in ``language``, in order."""
    pattern = re.compile(rf"^```{language}\n(.*?)^```", re.S | re.M)
    return pattern.findall(path.read_text())


def python_block(first_line: str) -> str:
    """The README's Python block that starts with ``first_line``."""
    found = [b for b in fenced_blocks(README, "python") if b.startswith(first_line)]
    assert len(found) == 1, f"{len(found)} README python blocks start with {first_line!r}"
    return found[0]


def shrink(code: str, replacements: dict[str, str]) -> str:
    """``code`` with each replacement applied; each must apply (else the snippet changed)."""
    for old, new in replacements.items():
        assert old in code, f"README snippet no longer contains {old!r}: update this test"
        code = code.replace(old, new)
    return code


# First line of each README python block -> how this file runs it.
RUN_BY = {
    "import jax, jaxnets": "test_quickstart_block",
    "from jaxnets import parallel": "test_multi_device_block (with a prelude for x, y, state...)",
}


def test_every_python_block_is_run_here():
    firsts = [b.splitlines()[0] for b in fenced_blocks(README, "python")]
    assert sorted(firsts) == sorted(RUN_BY), (
        "README python blocks changed: list each new block's first line in RUN_BY and run it"
    )


@pytest.mark.slow
def test_quickstart_block(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the block writes runs/mlp and runs/cnn_model
    code = shrink(
        python_block("import jax, jaxnets"), {"epochs=30": "epochs=2", "epochs=10": "epochs=2"}
    )
    ns: dict = {}
    exec(compile(code, "README.md quickstart", "exec"), ns)

    # The functional half: evaluate gives the compiled metrics, fit kept validation history.
    state, ds = ns["state"], ns["ds"]
    scores = ns["evaluate"](state, (ds.x_test, ds.y_test))
    assert set(scores) == {"loss", "accuracy", "f1"}
    assert {"val_loss", "val_accuracy", "val_f1"} <= set(ns["history"])
    assert len(ns["history"]["loss"]) == 2
    # "resumable": fit again with the same workdir resumes the finished run (no more steps).
    params = jax.device_get(state.params)
    again, history = ns["fit"](
        state, (ds.x_train, ds.y_train), epochs=2, batch_size=32, workdir="runs/mlp", verbose=0
    )
    assert int(again.step) == int(state.step)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(again.params), params)

    # The Keras-style half: evaluate returns [loss, accuracy], `state` is the TrainState,
    # and the saved model predicts what the trained one does.
    model, img = ns["model"], ns["img"]
    assert 0.0 <= ns["accuracy"] <= 1.0 and np.isfinite(ns["loss"])
    assert isinstance(model.state, jaxnets.training.TrainState)
    restored = jaxnets.load_model("runs/cnn_model")
    np.testing.assert_allclose(
        restored.predict(img.x_test[:16], verbose=0),
        model.predict(img.x_test[:16], verbose=0),
        rtol=1e-6,
        atol=1e-6,
    )


@pytest.mark.slow
@pytest.mark.eight_devices
def test_multi_device_block():
    """The block as written, after the definitions it takes from the text around it."""
    from jaxnets.training import create_train_state, fit

    ds = data.load("digits")
    x, y = ds.x_train[:400], ds.y_train[:400]

    def make_state():
        return create_train_state(
            models.get("mlp", num_classes=10),
            "adam",
            x[:1],
            learning_rate=1e-3,
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )

    model = jaxnets.Sequential([jaxnets.layers.Dense(10, activation="softmax", input_shape=(64,))])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    my_mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    ns = {"fit": fit, "state": make_state(), "x": x, "y": y, "model": model, "my_mesh": my_mesh}
    exec(
        compile(python_block("from jaxnets import parallel"), "README.md multi-device", "exec"), ns
    )

    # The prose: 8 devices give the parameters of one device (here two fits of 4 steps).
    one, _ = fit(make_state(), (x, y), batch_size=100, verbose=0)
    one, _ = fit(one, (x, y), batch_size=100, verbose=0)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
        jax.device_get(ns["state"].params),
        jax.device_get(one.params),
    )
    assert ns["engine"].batch_multiple == 8


# --- commands -------------------------------------------------------------------------

CONTINUATION = re.compile(r"\\\n\s*")
INLINE = re.compile(r"`((?:jaxnets|python|python3|bash) [^`]+)`")


def shell_lines(path: Path) -> list[str]:
    """Commands of ``path``: lines of its bash blocks and inline code spans, comments cut."""
    lines = []
    for block in fenced_blocks(path, "bash"):
        for line in CONTINUATION.sub(" ", block).splitlines():
            line = line.split("  #")[0].strip()  # the README's comments follow two spaces
            if line and not line.startswith("#"):
                lines.append(line)
    # Inline code with flags is a command; without (`jaxnets evaluate`) it names one in prose.
    lines += [" ".join(m.split()) for m in INLINE.findall(path.read_text()) if " --" in m]
    return lines


def command_words(line: str, program: str) -> list[list[str]]:
    """Each run of ``program`` in ``line`` as its argument list (``a && b`` give two)."""
    found = []
    for part in re.split(r"&&|\|\||;", line):
        words = shlex.split(part)
        while words and ("=" in words[0] or words[0] in {"srun", "timeout"}):
            words = words[1:]  # environment assignments and launchers before the command
        if words and words[0] == program:
            found.append(words[1:])
    return found


def jaxnets_commands() -> list[tuple[str, list[str]]]:
    return [
        (str(p.name), args)
        for p in COMMAND_DOCS
        for line in shell_lines(p)
        for args in command_words(line, "jaxnets")
    ]


def check_jaxnets_args(args: list[str]) -> None:
    """Parses ``jaxnets ARGS`` as the command would; checks the zoo and dataset names."""
    if "--help" in args or "<" in " ".join(args):
        return  # --help exits; `<study>`-style placeholders are not commands
    parsed = build_parser().parse_args(args)
    if parsed.command == "train":
        if parsed.model not in {"NAME"}:
            assert parsed.model in models.names(), f"unknown model {parsed.model!r}"
        if parsed.dataset is not None:
            assert data.canonical_name(parsed.dataset) in data.names(), parsed.dataset
    if parsed.command == "launch":
        inner = [w for w in parsed.cmd if w != "--"]
        assert inner[0] == "jaxnets", inner
        check_jaxnets_args(inner[1:])


def test_jaxnets_commands_parse():
    commands = jaxnets_commands()
    assert len(commands) > 20  # the extraction still finds the README's commands
    for where, args in commands:
        try:
            check_jaxnets_args(args)
        except SystemExit:
            pytest.fail(f"{where}: `jaxnets {' '.join(args)}` does not parse")
        except Exception as e:
            pytest.fail(f"{where}: `jaxnets {' '.join(args)}`: {e}")


def python_target(args: list[str]) -> tuple[Path | None, list[str]]:
    """The source file of ``python ARGS`` (a script or ``-m module``) and its flags."""
    if args[:1] == ["-m"]:
        module, rest = args[1], args[2:]
        if module in {"pytest", "venv", "pip"}:
            return None, []
        spec = importlib.util.find_spec(module) if not module.startswith("benchmarks") else None
        path = Path(spec.origin) if spec else ROOT / (module.replace(".", "/") + ".py")
        return path, rest
    return ROOT / args[0], args[1:]


def test_python_commands_name_existing_scripts_and_flags():
    checked = 0
    for path in COMMAND_DOCS:
        for line in shell_lines(path):
            for program in ("python", "python3"):
                for args in command_words(line, program):
                    if not args or "<" in args[0]:
                        continue
                    script, rest = python_target(args)
                    if script is None:
                        continue
                    assert script.exists(), f"{path.name}: `{line}`: no {script}"
                    source = script.read_text()
                    if script.parent.parent.name == "experiments":  # shared flags live there
                        source += (ROOT / "experiments" / "common.py").read_text()
                    for flag in (w for w in rest if w.startswith("--")):
                        assert f'"{flag}"' in source, (
                            f"{path.name}: `{line}`: {script.name} has no {flag}"
                        )
                    checked += 1
            for args in command_words(line, "bash"):
                assert (ROOT / args[0]).exists(), f"{path.name}: `{line}`: no {args[0]}"
    assert checked > 15


# --- numbers --------------------------------------------------------------------------


def parameter_count(name: str) -> int:
    """Parameters of zoo model ``name`` with its default fields (what `jaxnets models` prints)."""
    module = models.get(name)
    x = models.example_input(name, batch_size=1)
    shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), x)
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes.get("params", {})))


def model_table_rows() -> list[tuple[list[str], list[int]]]:
    """(zoo names, parameter counts) of each row of the README's model table."""
    section = README.read_text().split("## Models", 1)[1].split("\n## ", 1)[0]
    names = set(models.names())
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) != 5 or not cells[0].startswith("`"):
            continue
        row_names = [n for n in re.findall(r"`(\w+)`", cells[0]) if n in names]
        counts = [int(c.replace(",", "")) for c in re.findall(r"[\d,]+\d", cells[3])]
        rows.append((row_names, counts))
    return rows


@pytest.mark.slow
def test_model_table_parameter_counts():
    rows = model_table_rows()
    assert len(rows) >= 14
    for row_names, counts in rows:
        if len(counts) == 1:
            counts = counts * len(row_names)  # one count for aliases (`mlp`, `mlp_784_128_10`)
        if row_names[0] == "dcgan_generator":
            row_names = ["dcgan_generator", "dcgan_discriminator"]
        assert len(counts) == len(row_names), (row_names, counts)
        for name, count in zip(row_names, counts):
            assert parameter_count(name) == count, f"README says {name} has {count:,} parameters"


def _sizes(name: str, ds) -> str:
    """How the README's dataset table writes ``ds``'s size."""
    n_train, n_test = len(ds.x_train), len(ds.x_test)
    shape = "x".join(map(str, ds.x_train.shape[1:]))
    if name == "digits":
        return f"{n_train + n_test} x {shape}"
    if name == "mnist1d":
        return f"{n_train} + {n_test} x {shape}"
    if name == "fashion_mnist":
        return f"{n_train // 1000}k + {n_test // 1000}k x {shape}"
    if name == "mnist_5k":
        return f"{n_train + n_test} x {shape}"
    if name == "austen":
        return f"{(n_train + n_test) / 1e6:.1f} M characters"
    # austen_segmentation: characters in its windows (the few of a short last window dropped)
    return f"{(ds.x_train.size + ds.x_test.size) / 1e6:.1f} M characters, windows of {shape}"


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, options",
    [
        ("digits", {}),
        ("mnist1d", {}),
        ("fashion_mnist", {}),
        ("mnist_5k", {}),
        ("austen", {"seq_len": None}),
        ("austen_segmentation", {}),
    ],
)
def test_dataset_table_sizes(name, options):
    try:
        ds = data.load(name, **options)
    except jaxnets.errors.DatasetNotFoundError as e:
        pytest.skip(str(e).splitlines()[0])
    row = next(line for line in README.read_text().splitlines() if line.startswith(f"| `{name}`"))
    assert _sizes(name, ds) in row, f"README row {row!r} does not give {_sizes(name, ds)!r}"
