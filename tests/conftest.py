"""Test configuration: 8 fake CPU devices, so sharding tests run anywhere.

The device count must be set before JAX starts its backend, so this runs at
import time, before any test module touches a JAX array.

On an accelerator (a GPU run of the suite), float32 products default to TF32 there,
which the float64 oracles of these tests would flag, so the session asks for full
precision; tests marked ``eight_devices`` (the fake CPU devices) or ``cpu`` (CPU-only
choices such as im2col convolutions) skip with a reason. ``JAX_PLATFORMS=cpu`` runs
the whole suite as CI does.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# jaxnets.cpu_dots times XLA's two dot libraries on a big program's first run and keeps the
# faster: a choice that depends on the machine's load. The suite pins XLA's default so its
# numbers never depend on a timing (tests/test_cpu_dots.py unpins it to test the measuring).
os.environ.setdefault("JAXNETS_CPU_DOTS", "xla")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
ON_CPU = jax.default_backend() == "cpu"
if not ON_CPU:
    jax.config.update("jax_default_matmul_precision", "highest")

# Fuzz tests explore new inputs on developers' machines, but CI replays a fixed set, so
# a submission's verdict never depends on the draw (new findings become pinned tests).
try:
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, print_blob=True)
    if os.environ.get("CI"):
        settings.load_profile("ci")
except ImportError:  # hypothesis is a test extra
    pass


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Frees the compiled programs of each test module once it is done.

    Every live XLA:CPU executable holds about three memory mappings, and Linux
    allows a process 65530 (``vm.max_map_count``): the whole suite in one
    process compiles more programs than that allows, and XLA then crashes with
    a segmentation fault when a mapping fails (it did, in the last few percent
    of the suite). JAX's jit caches keep every executable alive; clearing them
    between modules lets each be freed (a later module that needs one again
    compiles it, or reads it from the persistent cache).
    """
    yield
    jax.clear_caches()


def pytest_collection_modifyitems(config, items):
    """Skips tests whose premise this backend lacks, naming what they need."""
    few_devices = jax.device_count() < 8
    for item in items:
        if item.get_closest_marker("cpu") and not ON_CPU:
            item.add_marker(pytest.mark.skip(reason="tests a CPU-only choice; JAX_PLATFORMS=cpu"))
        if item.get_closest_marker("eight_devices") and few_devices:
            reason = f"needs 8 devices, {jax.device_count()} here; JAX_PLATFORMS=cpu gives 8"
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def digits():
    """The scikit-learn digits split used across tests (train, test)."""
    from jaxnets import data

    return data.load("digits")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
