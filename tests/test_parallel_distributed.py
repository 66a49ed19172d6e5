"""Multi-process start-up, per-process data shards, and real 2-process runs on localhost."""

import importlib.util
import io
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxnets.errors import ConfigError, DataError
from jaxnets.parallel import distributed
from jaxnets.parallel.launch import launch

WORKER = Path(__file__).parent / "scripts" / "parallel_worker.py"


def load_worker():
    spec = importlib.util.spec_from_file_location("parallel_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_options_come_from_arguments_then_environment():
    env = {
        "JAXNETS_COORDINATOR": "10.0.0.1:999",
        "JAXNETS_NUM_PROCESSES": "4",
        "JAXNETS_PROCESS_ID": "3",
    }
    options = distributed.resolve_options(process_id=2, environ=env)
    # Not a local address: JAX binds the coordinator itself.
    assert options == {"coordinator_address": "10.0.0.1:999", "num_processes": 4, "process_id": 2}
    local = distributed.resolve_options("localhost:5000", 2, 0, environ={})
    assert local["coordinator_bind_address"] == "127.0.0.1:5000"
    assert distributed.resolve_options(environ={}) == {
        "coordinator_address": None,
        "num_processes": None,
        "process_id": None,
    }  # all left to JAX's cluster detection
    assert distributed.requested(env) and not distributed.requested({})


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"coordinator_address": "no-port"}, "host:port"),
        ({"num_processes": 2, "process_id": 2}, r"\[0, 2\)"),
        ({"num_processes": 0}, ">= 1"),
    ],
)
def test_bad_options_are_rejected_before_jax_sees_them(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        distributed.resolve_options(**kwargs, environ={})
    with pytest.raises(ConfigError, match="must be an integer"):
        distributed.resolve_options(environ={"JAXNETS_PROCESS_ID": "one"})


def test_process_shards_cover_every_row_once_with_equal_sizes():
    x, y = np.arange(11) * 10, np.arange(11)
    shards = [distributed.process_shard((x, y), p, 3) for p in range(3)]
    assert {len(s["x"]) for s in shards} == {4}
    real = np.concatenate([s["y"][s["mask"] > 0] for s in shards])
    assert sorted(real.tolist()) == list(range(11))
    np.testing.assert_array_equal(shards[2]["mask"], [1, 1, 1, 0])
    with pytest.raises(DataError, match="at least one each"):
        distributed.process_shard((x[:2], y[:2]), 0, 3)


def test_single_process_helpers():
    assert distributed.local_batch_size(32) == 32
    assert distributed.is_main_process()
    distributed.check_same_data({"x": np.zeros((4, 2))}, 2)  # nothing to compare
    distributed.assert_same_config({"lr": 0.1})
    assert distributed.initialize.__doc__ and jax.process_count() == 1


def launch_workers(tmp_path, *args, n=2, cpu_devices=2):
    out, err = io.StringIO(), io.StringIO()
    start = time.monotonic()
    rc = launch(
        [sys.executable, str(WORKER), "--out", str(tmp_path), *args],
        n,
        cpu_devices=cpu_devices,
        timeout=110,
        grace=3.0,
        stdout=out,
        stderr=err,
    )
    return rc, out.getvalue() + err.getvalue(), time.monotonic() - start


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.timeout(120)
def test_two_processes_end_with_identical_params_equal_to_one_process(tmp_path):
    rc, output, _ = launch_workers(tmp_path)
    assert rc == 0, output
    assert "[0] process 0/2: 2 local of 4" in output
    first, second = np.load(tmp_path / "params_0.npz"), np.load(tmp_path / "params_1.npz")
    assert sorted(first.files) == sorted(second.files) and first.files
    for name in first.files:
        np.testing.assert_array_equal(first[name], second[name])  # bitwise
    # The same global batches in one process, on one device.
    worker = load_worker()
    x, y = worker.data()
    state = worker.train(x, y, None, worker.GLOBAL_BATCH)
    flat = {
        "/".join(str(k.key) for k in path): np.asarray(v)
        for path, v in jax.tree_util.tree_flatten_with_path(state.params)[0]
    }
    assert sorted(flat) == sorted(first.files)
    for name in first.files:
        np.testing.assert_allclose(first[name], flat[name], atol=1e-6, rtol=0)
    # evaluate: the global loss in every process; predict: each process's own rows.
    from jaxnets.training import evaluate, predict

    want_loss = evaluate(state, (x, y))["loss"]
    want_outputs = predict(state, x)
    for rank in range(2):
        got = np.load(tmp_path / f"eval_{rank}.npz")
        assert float(got["loss"]) == pytest.approx(want_loss, abs=1e-6)
        real = got["mask"] > 0
        np.testing.assert_allclose(got["outputs"][real], want_outputs[rank::2], atol=1e-5)


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.timeout(120)
def test_a_dying_peer_stops_the_run_quickly_with_its_error(tmp_path):
    rc, output, seconds = launch_workers(tmp_path, "--fail-rank", "1", cpu_devices=1)
    assert rc != 0
    assert seconds < 60  # not the 100 s heartbeat timeout
    assert "process 1 exited with code 1" in output
    assert "RuntimeError: process 1 fails on purpose" in output
    assert not list(tmp_path.glob("params_*.npz"))


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.timeout(120)
def test_uneven_data_across_processes_is_rejected_in_every_process(tmp_path):
    rc, output, _ = launch_workers(tmp_path, "--uneven", cpu_devices=1)
    assert rc != 0
    message = "processes disagree on their rows (process 0: 160, process 1: 161)"
    assert output.count(message) >= 2  # each process says it, then the launcher repeats one
    assert not list(tmp_path.glob("params_*.npz"))
