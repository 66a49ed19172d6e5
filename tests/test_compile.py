"""`jaxnets.compile`: persistent cache, pre-flight report, retrace guard."""

import logging
import warnings
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets import compile as compile_lib
from jaxnets.callbacks import Callback
from jaxnets.compile import GuardedStep, RetraceWarning
from jaxnets.training import create_train_state, evaluate, fit, train_step


def small_state(**kw):
    return create_train_state(nn.Dense(2), "sgd", np.zeros((1, 3), np.float32), **kw)


def batch(rows=4, dtype=np.float32):
    return {"x": np.ones((rows, 3), dtype), "y": np.zeros(rows, np.int32),
            "mask": np.ones(rows, np.float32)}  # fmt: skip


def test_retrace_guard_warns_once_naming_the_changed_argument():
    step = GuardedStep(jax.jit(train_step), "train step", ("state", "batch"))
    state = small_state()
    step(state, batch(4))
    step(state, batch(4))  # same signature: the same executable
    assert len(step.report.programs) == 1
    with pytest.warns(RetraceWarning, match=r"batch\['x'\]: float32\[4,3\] -> float32\[8,3\]"):
        step(state, batch(8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a third signature compiles without a second warning
        step(state, batch(2))
    assert len(step.report.programs) == 3


def test_retrace_guard_names_a_changed_static_field_inside_fit():
    class RaiseL2(Callback):  # replaces the state with one of another static config
        def on_epoch_end(self, epoch, logs=None):
            self.model.state = self.model.state.replace(l2=0.5)

    x, y = np.ones((8, 3), np.float32), np.zeros(8, np.int32)
    with pytest.warns(RetraceWarning, match=r"state\.l2 \(static\): 0\.0 -> 0\.5"):
        fit(small_state(seed=7), (x, y), epochs=2, batch_size=4, callbacks=[RaiseL2()], verbose=0)


def test_describe_change_finds_dtypes_and_keys():
    old = compile_lib._skeleton({"a": jnp.zeros(2), "b": jnp.zeros(3)})
    new = compile_lib._skeleton({"a": jnp.zeros(2, jnp.int32), "b": jnp.zeros(3)})
    assert compile_lib.describe_change(old, new, "x") == "x['a']: float32[2] -> int32[2]"
    other = compile_lib._skeleton({"a": jnp.zeros(2)})
    assert "keys ['a', 'b'] -> ['a']" in compile_lib.describe_change(old, other, "x")


def test_preflight_report_has_flops_compile_time_memory_and_parameters(capsys):
    x, y = np.ones((8, 3), np.float32), np.zeros(8, np.int32)
    fit(small_state(seed=11), (x, y), epochs=1, batch_size=4, verbose=2)
    out = capsys.readouterr().out
    assert "pre-flight: 8 parameters" in out
    line = next(l for l in out.splitlines() if "train step" in l)
    assert "compile" in line and "FLOP per step" in line and "peak memory" in line
    step = GuardedStep(jax.jit(train_step), "train step", ("state", "batch"))
    step(small_state(seed=12), batch(4))
    program = step.report.programs[0]
    # Dense(3 -> 2) on 4 rows: forward 4*3*2 multiply-adds = 48 FLOPs; backward twice that.
    assert program.flops >= 3 * 48 and program.peak_bytes > 0


def test_persistent_cache_directory_gets_entries(tmp_path):
    before = compile_lib.cache_dir()
    try:
        path = compile_lib.enable_cache(tmp_path / "xla")
        assert compile_lib.cache_dir() == path
        jax.jit(lambda v: jnp.sin(v) * 3.25 + 1.5)(jnp.arange(7.0)).block_until_ready()
        assert any(Path(path).iterdir())
        compile_lib.disable_cache()
        assert compile_lib.cache_dir() is None
    finally:
        compile_lib.enable_cache(before) if before else compile_lib.disable_cache()


def test_a_warm_start_takes_every_program_from_the_persistent_cache(tmp_path):
    # Initialization, the train step and evaluation: after the in-memory caches are
    # dropped (a new process, in effect) nothing compiles; thresholds keep no program out.
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)

    def run():
        state = create_train_state(nn.Dense(2), "adam", x[:1], learning_rate=0.1)
        state, _ = fit(state, (x, y), epochs=1, batch_size=8, verbose=0)
        evaluate(state, (x, y), batch_size=8)

    events = []

    def listener(name, **kwargs):
        events.append(name)

    def forget_compiled():
        jax.clear_caches()
        compile_lib._EXECUTABLES.clear()

    before = compile_lib.cache_dir()
    try:
        compile_lib.enable_cache(tmp_path / "xla")
        forget_compiled()  # programs earlier tests compiled would skip the cache write
        run()
        forget_compiled()
        jax.monitoring.register_event_listener(listener)
        try:
            run()
        finally:
            jax.monitoring.unregister_event_listener(listener)
    finally:
        compile_lib.enable_cache(before) if before else compile_lib.disable_cache()
    requests = events.count("/jax/compilation_cache/compile_requests_use_cache")
    assert requests >= 3 and events.count("/jax/compilation_cache/cache_hits") == requests
    assert "/jax/compilation_cache/cache_misses" not in events


_INIT_SCRIPT = """
import collections, jax, numpy as np
from jaxnets import models
from jaxnets.training import create_train_state
events = collections.Counter()
jax.monitoring.register_event_listener(lambda name, **kw: events.update([name]))
module = models.get("mlp_784_128_10", features=(4,), input_shape=(6,))
create_train_state(module, "adam", np.zeros((1, 6), np.float32))
print(events["/jax/compilation_cache/cache_misses"], events["/jax/compilation_cache/cache_hits"])
"""


@pytest.mark.subprocess
def test_a_state_made_before_any_fit_uses_the_persistent_cache(tmp_path):
    # The cache used to be turned on by the first fit, so a script that builds its
    # states first (a population's make_state(seed) for 16 members: 11 s before the
    # first step) compiled every init program, in every run.
    import os
    import subprocess
    import sys

    env = {**os.environ, compile_lib.ENV_VAR: str(tmp_path / "xla")}
    runs = [
        subprocess.run(
            [sys.executable, "-c", _INIT_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )  # fmt: skip
        for _ in range(2)
    ]
    assert all(run.returncode == 0 for run in runs), runs[-1].stderr[-2000:]
    (first_misses, first_hits), (misses, hits) = (map(int, r.stdout.split()) for r in runs)
    assert (first_misses, first_hits) == (1, 0)
    assert (misses, hits) == (0, 1)


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(compile_lib.ENV_VAR, str(tmp_path))
    assert compile_lib.default_cache_dir() == str(tmp_path)
    monkeypatch.setenv(compile_lib.ENV_VAR, "off")
    assert compile_lib.default_cache_dir() is None
    monkeypatch.delenv(compile_lib.ENV_VAR)
    assert compile_lib.default_cache_dir().endswith(str(Path(".cache", "jaxnets", "xla")))


class MaskedMean(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        mask = jnp.ones(x.shape[:2], bool) if mask is None else mask
        m = mask[..., None].astype(jnp.float32)  # (B, T, 1)
        return nn.Dense(2)((x * m).sum(1) / jnp.maximum(m.sum(1), 1.0))


def test_buckets_compile_once_each_and_show_in_the_report(capsys):
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 13, size=30)
    x = rng.normal(size=(30, 12, 2)).astype(np.float32)
    data = {"x": x, "y": (lengths > 6).astype(np.int32), "x_mask": np.arange(12) < lengths[:, None]}
    state = create_train_state(MaskedMean(), "adam", x[:1], learning_rate=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RetraceWarning)
        _, hist = fit(state, data, epochs=2, batch_size=4, buckets=[4, 8], verbose=2)
    out = capsys.readouterr().out
    for length in (4, 8, 12):
        assert out.count(f"train step [length {length}]") == 1
    assert len(hist["loss"]) == 2


@pytest.mark.slow
@pytest.mark.subprocess
def test_benchmark_quick_smoke_run_writes_a_table_json_and_plot(tmp_path):
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "benchmarks.run_all", "--quick", "--out", str(tmp_path),
           "--contenders", "hand", "hand-scan", "jaxnets", "jaxnets-fused", "--skip", "population",
           "start", "compile", "--rounds", "1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    rates = results["models"]["mlp"]["steps_per_s"]
    assert set(rates) == {"hand", "hand-scan", "jaxnets", "jaxnets-fused"} and all(rates.values())
    assert (tmp_path / "results.png").stat().st_size > 0
    assert "| mlp |" in proc.stdout


@pytest.mark.subprocess
def test_the_start_benchmark_times_imports_alone_and_reports_them():
    # The warm start's floor: a child that only imports what `jaxnets train` imports.
    from benchmarks import bench_compile, run_all

    seconds = bench_compile.import_seconds()
    assert isinstance(seconds, float) and seconds > 0
    results = {
        "matmul_peak_gflops": 100.0,
        "models": {},
        "start": {"command": "jaxnets train", "cold": 2.4, "warm": 1.0, "imports": 0.7},
    }
    assert "2.4s cold, 1.0s warm (2.4x); imports alone 0.70s" in run_all.table(results)


@pytest.mark.cpu
@pytest.mark.subprocess
def test_the_op_profile_names_the_training_programs_instructions():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "benchmarks.profile_ops", "--model", "mlp", "--epochs", "1"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "mlp (fuse=epoch): wall" in out and "| instruction | us/step |" in out
    # The MLP's products are there, with their shapes; no loop is counted with its body.
    assert "f32[784,128] dot(" in out and "while" not in out.split("by kind")[1]
    rows = [line for line in out.splitlines() if line.startswith("| ") and "us/step" not in line]
    assert len(rows) == 25 and all(float(r.split("|")[2]) > 0 for r in rows)


def test_a_fresh_state_of_an_equal_model_reuses_the_compiled_steps():
    # Two states built separately from the same options (new module object, optimizer
    # built from its name again) must share the step's executable: no new lowering.
    from jaxnets import models
    from jaxnets.population import fit_population

    x = np.random.default_rng(0).normal(size=(24, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)

    def fresh(seed):
        module = models.get("mlp", features=(7,), num_classes=2, input_shape=(5,))
        return create_train_state(module, "adam", x[:1], seed=seed, learning_rate=0.01)

    def compiles_of(run):
        before = compile_lib.STATS["compiles"]
        run()
        return compile_lib.STATS["compiles"] - before

    for fuse in (None, "epoch"):
        first = lambda f=fuse: fit(fresh(0), (x, y), batch_size=8, verbose=0, fuse=f)
        compiles_of(first)
        assert (
            compiles_of(lambda f=fuse: fit(fresh(1), (x, y), batch_size=8, verbose=0, fuse=f)) == 0
        )
    pop = lambda seeds: fit_population([fresh(s) for s in seeds], (x, y), batch_size=8, verbose=0)
    compiles_of(lambda: pop((0, 1)))
    assert compiles_of(lambda: pop((2, 3))) == 0
    # The control: another width is another program.
    other = models.get("mlp", features=(9,), num_classes=2, input_shape=(5,))
    state = create_train_state(other, "adam", x[:1], learning_rate=0.01)
    assert compiles_of(lambda: fit(state, (x, y), batch_size=8, verbose=0)) >= 1


@pytest.mark.cpu
def test_the_benchmark_cnn_check_finds_no_xla_convolution_in_the_fused_epoch():
    # run_all reports this for the CNN; the quick smoke run above covers the MLP only.
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.bench_jaxnets import fused_program_uses_im2col
    from benchmarks.common import SPECS, make_data

    spec = SPECS["cnn"]
    x, y = make_data(spec, 2)
    assert fused_program_uses_im2col(spec, x, y) is True


def compiled_programs(fn) -> list[str]:
    """Names of the XLA programs compiled while ``fn`` runs, with JAX's caches empty."""
    jax.clear_caches()
    compile_lib._EXECUTABLES.clear()
    records = []

    class Record(logging.Handler):
        def emit(self, record):
            if (message := record.getMessage()).startswith("Compiling "):
                records.append(message.split()[1])

    handler, logger = Record(), logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles():
            fn()
    finally:
        logger.removeHandler(handler)
    return records


def test_nothing_but_init_and_the_step_compiles_before_the_first_step():
    # Each eager op before the first step is one more program to compile (or to
    # load from the persistent cache): most of a warm start outside imports.
    from jaxnets import recipes
    from jaxnets.training import fused
    from jaxnets.training.engine import default_engine

    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    assert compiled_programs(lambda: recipes.dataset_options("cnn", "digits")) == []
    box = {}
    init = lambda: box.update(state=small_state(seed=3))  # noqa: E731
    assert compiled_programs(init) == ["jit(init_arrays)"]
    feed = fused.Feed({"x": x, "y": y}, 8, 0, default_engine())
    unit = next(feed.epoch(0))[1]
    assert compiled_programs(lambda: feed.zero_sums(box["state"], unit)) == []
    zeros = feed.zero_sums(box["state"], unit)
    assert compiled_programs(lambda: feed.step(box["state"], zeros, unit)) == ["jit(train_indexed)"]


def test_an_int_seed_gives_the_state_jax_random_key_gives():
    for seed in (0, 7, -3, 2**31 - 1):
        a, b = small_state(seed=seed), small_state(seed=jax.random.key(seed))
        assert np.array_equal(jax.random.key_data(a.rng), jax.random.key_data(b.rng))
        assert np.array_equal(a.params["kernel"], b.params["kernel"])
