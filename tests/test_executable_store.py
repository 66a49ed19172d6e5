"""`jaxnets.executable_store`: a command-line run's executables, keyed before tracing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets import compile as compile_lib
from jaxnets import executable_reader, executable_store
from jaxnets.compile import GuardedStep
from jaxnets.executable_store import ExecutableStore
from jaxnets.training import create_train_state, train_step

ROOT = Path(__file__).resolve().parents[1]


def _train(tmp_path, cache, workdir, *extra, env=None):
    """``jaxnets train`` in a new process; returns its output."""
    args = ["--model", "mlp_784_64_64_10", "--epochs", "2", "--batch-size", "100",
            "--val-fraction", "0.1", "--workdir", str(workdir), *extra]  # fmt: skip
    run_env = {**os.environ, "JAXNETS_COMPILE_CACHE": str(cache), **(env or {})}
    out = subprocess.run(
        [sys.executable, "-m", "jaxnets", "train", *args],
        cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "devices",
    [None, pytest.param(2, id="one-device-init-on-two-devices")],
)
def test_a_second_run_loads_its_programs_and_trains_bit_for_bit_alike(tmp_path, devices):
    # Two fake devices: the initialization runs on one of them, the steps on both;
    # a loaded one-device program must not be spread over both (it was, and failed).
    extra, env = (), None
    if devices:
        extra, env = (
            ("--devices", str(devices)),
            {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
        )
    cache, work = tmp_path / "cache", tmp_path / "work"
    first = _train(tmp_path, cache, work, *extra, env=env)
    work.rename(tmp_path / "first")  # the same --workdir again: a new run, not a resume
    second = _train(tmp_path, cache, work, *extra, env=env)
    assert "stored executable" not in first
    assert "train step: compile" in second and "(stored executable)" in second
    assert len(list((cache / "executables").glob("*.bin"))) >= 3  # init, step, shapes
    for name in ("history.json", "test_metrics.json"):
        a = json.loads((tmp_path / "first" / name).read_text())
        b = json.loads((work / name).read_text())
        assert a == b  # floats written with all their digits: bitwise equal


def _state(seed=0):
    # A new module and optimizer each time, as in a new process: the loaded step's
    # output structure must take the live state's static fields, not stale copies.
    return create_train_state(nn.Dense(3), "adam", np.zeros((1, 4), np.float32), seed=seed)


def _batch():
    rng = np.random.default_rng(0)
    return {"x": rng.normal(size=(8, 4)).astype(np.float32),
            "y": rng.integers(0, 3, 8).astype(np.int32), "mask": np.ones(8, np.float32)}  # fmt: skip


def _guarded_step():
    # A new jitted function per "process": the in-process executable cache cannot answer.
    return GuardedStep(jax.jit(lambda s, b: train_step(s, b)), "train step", ("state", "batch"))


def test_a_train_step_round_trips_through_a_store(tmp_path):
    first = _state()  # initialized outside the store: only the step is stored
    with executable_store.use(ExecutableStore(tmp_path, {"run": "a"})) as store:
        compiled_state, compiled_metrics = _guarded_step()(first, _batch())
    assert store.stats == {"loaded": 0, "stored": 1}
    loads = compile_lib.STATS["loads"]
    live, step = _state(), _guarded_step()
    with executable_store.use(ExecutableStore(tmp_path, {"run": "a"})) as store:
        state, metrics = step(live, _batch())
    assert store.stats == {"loaded": 1, "stored": 0} and compile_lib.STATS["loads"] == loads + 1
    assert step.report.programs[0].loaded and "(stored executable)" in str(step.report.programs[0])
    assert state.tx is live.tx and state.apply_fn is live.apply_fn  # the live statics
    raw = lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x  # noqa: E731
    now, then = (
        jax.tree.leaves((state, metrics)),
        jax.tree.leaves((compiled_state, compiled_metrics)),
    )
    for a, b in zip(now, then, strict=True):
        np.testing.assert_array_equal(raw(a), raw(b))


def test_a_key_changes_with_the_context_the_sources_and_the_arguments(tmp_path, monkeypatch):
    f = jax.jit(lambda x: x + 1)

    def stored(context, x):
        slot = ExecutableStore(tmp_path, context).slot("f", (x,), f)
        return slot.load() is not None, slot

    hit, slot = stored({"lr": 0.1}, jnp.ones(3))
    assert not hit and slot.save(
        executable_store.compile_fresh(lambda: f.trace(jnp.ones(3)).lower().compile())
    )
    assert stored({"lr": 0.1}, jnp.zeros(3))[0]  # values are not keyed, shapes are
    assert not stored({"lr": 0.2}, jnp.ones(3))[0]
    assert not stored({"lr": 0.1}, jnp.ones(4))[0]
    assert not stored({"lr": 0.1}, jnp.ones(3, jnp.int32))[0]
    monkeypatch.setattr(executable_store, "_package_digest", lambda: "an edited jaxnets")
    assert not stored({"lr": 0.1}, jnp.ones(3))[0]


def test_two_closures_of_one_function_get_an_entry_each_in_request_order(tmp_path):
    def scaled(k):
        return jax.jit(lambda x: x * k)  # the same code and signature; only the closure differs

    results = []
    for _ in range(2):  # the second pass loads, in the same order
        compile_lib._EXECUTABLES.clear()
        with executable_store.use(ExecutableStore(tmp_path, {})) as store:
            x = jnp.ones(2)
            out = [GuardedStep(scaled(k), "scale", ("x",))(x).tolist() for k in (2.0, 3.0)]
        results.append((out, dict(store.stats)))
    assert results[0] == ([[2.0, 2.0], [3.0, 3.0]], {"loaded": 0, "stored": 2})
    assert results[1] == ([[2.0, 2.0], [3.0, 3.0]], {"loaded": 2, "stored": 0})


def test_a_damaged_or_foreign_entry_is_a_miss_and_is_replaced(tmp_path):
    f = jax.jit(lambda x: x * 2)
    slot = ExecutableStore(tmp_path, {}).slot("f", (jnp.ones(2),), f)
    slot.path.write_bytes(b"not an entry")
    assert slot.load() is None
    with executable_store.use(ExecutableStore(tmp_path, {})) as store:
        assert executable_store.call("f", f, jnp.ones(2)).tolist() == [2.0, 2.0]
    assert store.stats == {"loaded": 0, "stored": 1}
    slot.path.write_bytes(slot.path.read_bytes()[:-50])  # a write cut short
    assert ExecutableStore(tmp_path, {}).slot("f", (jnp.ones(2),), f).load() is None


def test_a_program_with_a_host_callback_is_not_stored(tmp_path):
    def with_callback(x):
        jax.debug.callback(lambda v: None, x)  # the callback lives in this process only
        return x + 1

    with executable_store.use(ExecutableStore(tmp_path, {})) as store:
        assert float(executable_store.call("f", jax.jit(with_callback), jnp.float32(1.0))) == 2.0
    assert store.stats == {"loaded": 0, "stored": 0}
    assert list(tmp_path.glob("*.bin")) == []


@pytest.mark.slow
def test_a_program_with_lapack_calls_runs_when_loaded_by_a_new_process(tmp_path):
    # An orthogonal initializer (recurrent kernels) calls LAPACK; loading such a
    # program without setting LAPACK up crashed the process (segmentation fault).
    code = (
        "import sys, jax, jax.numpy as jnp\n"
        "from jaxnets import executable_store as es\n"
        "f = jax.jit(lambda x: jnp.linalg.qr(x)[1])\n"
        "with es.use(es.ExecutableStore(sys.argv[1], {})) as store:\n"
        "    r = es.call('qr', f, jnp.arange(9.0).reshape(3, 3) + jnp.eye(3))\n"
        "print(store.stats['loaded'], round(float(abs(r).sum()), 3))\n"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[1].stderr[-2000:]
    first, second = (r.stdout.split() for r in runs)
    assert first[0] == "0" and second[0] == "1" and first[1] == second[1]


def test_only_a_run_with_the_persistent_cache_on_opens_a_store(tmp_path):
    before = compile_lib.cache_dir()
    try:
        compile_lib.disable_cache()
        assert executable_store.for_run({}) is None  # --no-compile-cache
        compile_lib.enable_cache(tmp_path / "xla")
        store = executable_store.for_run({})
        assert store.folder == tmp_path / "xla" / "executables"
    finally:
        compile_lib.enable_cache(before) if before else compile_lib.disable_cache()


def test_a_folder_keeps_only_the_newest_entries(tmp_path, monkeypatch):
    monkeypatch.setattr(executable_store, "MAX_ENTRIES", 2)
    for k in range(4):
        f = jax.jit(lambda x, k=k: x + k)
        with executable_store.use(ExecutableStore(tmp_path, {"k": k})):
            executable_store.call("f", f, jnp.ones(2))
    assert len(list(tmp_path.glob("*.bin"))) == 2


def test_a_program_jax_s_own_cache_answered_is_compiled_afresh_before_it_is_stored(tmp_path):
    # An executable loaded from JAX's persistent cache serializes without its kernels:
    # stored as it was, the next run failed with "Function ... not found".
    before = compile_lib.cache_dir()
    f = jax.jit(lambda x: jnp.sin(x) * 3.0 + 0.5)
    x = jnp.linspace(0.0, 1.0, 5)
    try:
        compile_lib.enable_cache(tmp_path / "xla")
        f.trace(x).lower().compile()  # now in JAX's cache
        jax.clear_caches()  # so the next compile reads it from there, as a new process would
        for expected in ({"loaded": 0, "stored": 1}, {"loaded": 1, "stored": 0}):
            with executable_store.use(ExecutableStore(tmp_path / "store", {})) as store:
                out = executable_store.call("f", f, x)
            assert store.stats == expected
            np.testing.assert_allclose(out, np.sin(np.linspace(0.0, 1.0, 5)) * 3.0 + 0.5, rtol=1e-6)
    finally:
        compile_lib.enable_cache(before) if before else compile_lib.disable_cache()


class _RunsAShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # what a tampered pickle would do: call a function while read
        return (os.system, (f"touch {self.marker}",))


def test_a_tampered_entry_is_refused_before_any_of_its_code_runs(tmp_path):
    import pickle  # the test builds the attack; the package itself never imports pickle
    import zlib

    f = jax.jit(lambda x: x - 1)
    with executable_store.use(ExecutableStore(tmp_path, {})) as store:
        executable_store.call("f", f, jnp.ones(2))
    assert store.stats["stored"] == 1
    (path,) = tmp_path.glob("*.bin")
    data = path.read_bytes()
    start = len(executable_store.MAGIC) + 8
    size = int.from_bytes(data[len(executable_store.MAGIC) : start], "little")
    header = json.loads(data[start : start + size])
    marker = tmp_path / "ran"
    payload = zlib.compress(pickle.dumps(_RunsAShellCommand(marker)))
    header["executable_bytes"] = len(payload)
    text = json.dumps(header).encode()
    path.write_bytes(executable_store.MAGIC + len(text).to_bytes(8, "little") + text + payload)

    slot = ExecutableStore(tmp_path, {}).slot("f", (jnp.ones(2),), f)
    assert slot.load() is None  # a miss: the program is compiled again
    with pytest.raises(executable_reader.RefusedEntry, match="posix.system|os.system"):
        executable_reader.load_executable(
            zlib.decompress(payload), slot.in_tree, None, jax.devices()[:1]
        )
    assert not marker.exists()
