"""Choosing XLA:CPU's dot library by measurement (`jaxnets.cpu_dots`)."""

import json
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets import compile as compile_lib
from jaxnets import cpu_dots
from jaxnets.errors import ConfigError
from jaxnets.training import create_train_state, fit

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU libraries")


def step(state, sums, x):
    """A program of the form the tuner times: f(state, sums, *rest) -> (state, sums)."""
    h = jnp.tanh(x @ state["w"])
    return {"w": state["w"] - 1e-3 * x.T @ h}, {"n": sums["n"] + jnp.sum(h)}


def step_args(n=64):
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(n, n)).astype(np.float32))
    x = jnp.asarray(rng.normal(size=(n, n)).astype(np.float32))
    return {"w": w}, {"n": jnp.zeros((), jnp.float32)}, x


def ynn_dots(compiled) -> int:
    """How many dots of a compiled program run inside YNNPACK fusions."""
    text = compiled.as_text()
    bodies = dict(re.findall(r"^(%[\w.-]+) \(.*?\{\n(.*?)^\}", text, flags=re.M | re.S))
    called = re.findall(r"= \S+ fusion\(.*?calls=(%[\w.-]+).*__ynn_fusion", text)
    return sum(" dot(" in bodies.get(name, "") for name in called)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh persistent cache (and decisions file) for the test; the old one restored."""
    monkeypatch.delenv(cpu_dots.ENV_VAR, raising=False)
    before = compile_lib.cache_dir()
    compile_lib.enable_cache(tmp_path / "xla")
    compile_lib._EXECUTABLES.clear()
    yield tmp_path / "xla" / cpu_dots.DECISIONS_FILE
    compile_lib._EXECUTABLES.clear()
    compile_lib.enable_cache(before) if before else compile_lib.disable_cache()


def fake_timer(xla_s, eigen_s, calls):
    def seconds_per_call(candidates, args, rounds=7):
        calls.append(sorted(candidates))
        return {"xla": [xla_s] * rounds, "eigen": [eigen_s] * rounds}

    return seconds_per_call


def timed(monkeypatch, xla_s, eigen_s):
    """Every program counts as big enough, and timing reports the given seconds; returns the calls."""
    monkeypatch.setattr(cpu_dots, "MIN_FLOPS", 0.0)
    calls = []
    monkeypatch.setattr(cpu_dots, "seconds_per_call", fake_timer(xla_s, eigen_s, calls))
    return calls


def dense_problem(n, seed):
    """A small classification set and a function making a fresh Dense(3) state for it."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, seed % 6] > 0).astype(np.int32)
    return (x, y), lambda: create_train_state(nn.Dense(3), "adam", x[:1], learning_rate=0.05)


def test_mode_reads_the_environment_and_names_bad_values(monkeypatch):
    monkeypatch.delenv(cpu_dots.ENV_VAR, raising=False)
    assert cpu_dots.mode() == "auto"
    monkeypatch.setenv(cpu_dots.ENV_VAR, " Eigen ")
    assert cpu_dots.mode() == "eigen"
    monkeypatch.setenv(cpu_dots.ENV_VAR, "mkl")
    with pytest.raises(ConfigError, match=r"auto, xla, eigen; got 'mkl'"):
        cpu_dots.mode()


def test_dot_flops_counts_products_like_xla_loop_bodies_once():
    def f(a, b, c):
        ab = jnp.einsum("bij,bjk->bik", a, b)  # batch 3 of (4x5)(5x6): 2*3*4*5*6
        out, _ = jax.lax.scan(lambda h, _: (h @ c, None), ab[0], None, length=7)  # 2*4*6*6
        return out

    traced = jax.jit(f).trace(jnp.ones((3, 4, 5)), jnp.ones((3, 5, 6)), jnp.ones((6, 6)))
    assert cpu_dots.dot_flops(traced.jaxpr) == 2 * 3 * 4 * 5 * 6 + 2 * 4 * 6 * 6


def test_timing_runs_on_copies_and_leaves_the_real_arguments_alone():
    state, sums, x = step_args()
    w_before = np.asarray(state["w"]).copy()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(state, sums, x).compile()
    times = cpu_dots.seconds_per_call({"a": compiled, "b": compiled}, (state, sums, x), rounds=2)
    assert set(times) == {"a", "b"} and all(len(t) == 2 for t in times.values())
    assert all(0 < s < 1 for t in times.values() for s in t)
    assert not state["w"].is_deleted() and not sums["n"].is_deleted()  # not donated
    np.testing.assert_array_equal(np.asarray(state["w"]), w_before)


def test_eigen_options_take_dots_from_ynnpack():
    state, sums, x = step_args()
    lowered = jax.jit(step).lower(state, sums, x)
    default = lowered.compile()
    eigen = lowered.compile(cpu_dots.options("eigen"))
    assert ynn_dots(default) == 1  # jaxlib 0.10: YNNPACK runs x @ w (x.T @ h is not its layout)
    assert ynn_dots(eigen) == 0
    a, b = default(state, sums, x), eigen(state, sums, x)
    np.testing.assert_allclose(np.asarray(a[0]["w"]), np.asarray(b[0]["w"]), rtol=1e-5)


def test_a_measured_choice_is_kept_and_reused_without_measuring(cache, monkeypatch):
    calls = timed(monkeypatch, 2.0, 1.0)
    args = step_args()
    jitted = jax.jit(step, donate_argnums=(0, 1))
    compiled, note = cpu_dots.compile_tuned(compile_lib._compile, jitted.trace(*args), {}, args)
    assert calls == [["eigen", "xla"]] and ynn_dots(compiled) == 0
    assert note == "dots: Eigen (measured: Eigen 2.00x as fast as YNNPACK)"
    assert list(json.loads(cache.read_text()).values()) == ["eigen"]
    # A new run of the same program: the choice comes from the file, nothing is timed.
    monkeypatch.setattr(cpu_dots, "seconds_per_call", fake_timer(1.0, 2.0, calls))
    compiled, note = cpu_dots.compile_tuned(compile_lib._compile, jitted.trace(*args), {}, args)
    assert len(calls) == 1 and note == "dots: Eigen" and ynn_dots(compiled) == 0


def test_eigen_must_win_by_the_margin(cache, monkeypatch):
    timed(monkeypatch, 1.0, 0.97)
    args = step_args()
    traced = jax.jit(step, donate_argnums=(0, 1)).trace(*args)
    compiled, note = cpu_dots.compile_tuned(compile_lib._compile, traced, {}, args)
    assert note.startswith("dots: YNNPACK") and ynn_dots(compiled) > 0
    assert list(json.loads(cache.read_text()).values()) == ["xla"]


@pytest.mark.parametrize("why", ["small", "cache off", "env xla", "processes"])
def test_nothing_is_measured_when_it_cannot_matter_or_cannot_be_kept(cache, monkeypatch, why):
    calls = []
    monkeypatch.setattr(cpu_dots, "seconds_per_call", fake_timer(2.0, 1.0, calls))
    if why == "cache off":
        monkeypatch.setattr(cpu_dots, "MIN_FLOPS", 0.0)
        compile_lib.disable_cache()  # measuring each run would change numbers between runs
    elif why == "env xla":
        monkeypatch.setattr(cpu_dots, "MIN_FLOPS", 0.0)
        monkeypatch.setenv(cpu_dots.ENV_VAR, "xla")
    elif why == "processes":  # peers would wait in collectives for timing calls they never make
        monkeypatch.setattr(cpu_dots, "MIN_FLOPS", 0.0)
        monkeypatch.setattr(jax, "process_count", lambda: 2)
    args = step_args()  # 2 * 64**3 * 2 FLOPs: far under the real MIN_FLOPS
    traced = jax.jit(step, donate_argnums=(0, 1)).trace(*args)
    compiled, note = cpu_dots.compile_tuned(compile_lib._compile, traced, {}, args)
    assert calls == [] and note == "" and ynn_dots(compiled) > 0
    assert not cache.exists()


def test_env_eigen_forces_eigen_without_measuring(cache, monkeypatch):
    monkeypatch.setenv(cpu_dots.ENV_VAR, "eigen")
    calls = []
    monkeypatch.setattr(cpu_dots, "seconds_per_call", fake_timer(1.0, 2.0, calls))
    args = step_args()
    traced = jax.jit(step, donate_argnums=(0, 1)).trace(*args)
    compiled, note = cpu_dots.compile_tuned(compile_lib._compile, traced, {}, args)
    assert calls == [] and ynn_dots(compiled) == 0 and note == "dots: Eigen (JAXNETS_CPU_DOTS)"


def test_a_damaged_decisions_file_is_remeasured_and_rewritten(cache, monkeypatch):
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("{not json")
    calls = timed(monkeypatch, 2.0, 1.0)
    args = step_args()
    traced = jax.jit(step, donate_argnums=(0, 1)).trace(*args)
    cpu_dots.compile_tuned(compile_lib._compile, traced, {}, args)
    assert len(calls) == 1 and list(json.loads(cache.read_text()).values()) == ["eigen"]


def test_fit_measures_the_per_step_program_once_and_the_fused_epoch_shares_it(
    cache, monkeypatch, capsys
):
    calls = timed(monkeypatch, 2.0, 1.0)
    data, state = dense_problem(40, seed=1)
    a, _ = fit(state(), data, epochs=2, batch_size=8, verbose=1)
    assert "train step [dots: Eigen (measured: Eigen 2.00x" in capsys.readouterr().out
    b, _ = fit(state(), data, epochs=2, batch_size=8, verbose=1, fuse="epoch")
    assert "fused epoch [dots: Eigen]" in capsys.readouterr().out
    assert len(calls) == 1  # the fused epoch took the per-step program's choice
    assert sorted(json.loads(cache.read_text()).values()) == ["eigen", "eigen"]
    for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=1e-6, rtol=0)


def test_a_fused_epoch_run_first_measures_its_per_step_program(cache, monkeypatch, capsys):
    calls = timed(monkeypatch, 1.0, 2.0)
    data, state = dense_problem(32, seed=2)
    fit(state(), data, epochs=1, batch_size=8, verbose=1, fuse="epoch")
    out = capsys.readouterr().out
    assert (
        "fused epoch [dots: YNNPACK (measured: Eigen 0.50x as fast as YNNPACK), on the per-step program]"
        in out
    )
    assert len(calls) == 1 and sorted(json.loads(cache.read_text()).values()) == ["xla", "xla"]
    # The per-step loop of the same run finds its program's choice: nothing is timed again.
    fit(state(), data, epochs=1, batch_size=8, verbose=1)
    assert "train step [dots: YNNPACK]" in capsys.readouterr().out and len(calls) == 1


def test_fused_chunks_of_every_length_share_the_per_step_decision(cache, monkeypatch, capsys):
    # 5 steps in chunks of 2: chunk programs of 2 and 1 steps, one measurement in all,
    # so a run resumed mid-epoch (a shorter first chunk) computes as the first run did.
    calls = timed(monkeypatch, 2.0, 1.0)
    data, state = dense_problem(40, seed=3)
    fit(state(), data, epochs=1, batch_size=8, verbose=2, fuse="epoch", chunk_steps=2)
    assert len(calls) == 1
    assert sorted(json.loads(cache.read_text()).values()) == ["eigen"] * 3  # step, 2, 1
    fit(state(), data, epochs=1, batch_size=8, verbose=1)
    assert "train step [dots: Eigen]" in capsys.readouterr().out and len(calls) == 1
