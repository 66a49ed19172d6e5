"""`jaxnets.cli.import_runner`: a fresh command process imports with the collector paused."""

import gc
import subprocess
import sys

import jax  # noqa: F401  (this test process has imported JAX already)

from jaxnets import cli


def test_a_fresh_process_imports_with_gc_paused_then_freezes_the_imports():
    code = (
        "import gc, sys\n"
        "from jaxnets.cli import import_runner\n"
        "enabled = []\n"
        "gc.callbacks.append(lambda phase, info: enabled.append(info['generation']))\n"
        "import_runner()\n"
        "assert 'jax' in sys.modules and 'flax' in sys.modules\n"
        "print(gc.isenabled(), gc.get_freeze_count() > 100_000, len(enabled))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # Re-enabled afterwards, the imported objects frozen, and no collection ran during
    # the imports (a plain import of JAX and Flax runs about 260).
    assert out.stdout.split() == ["True", "True", "0"]


def test_a_process_that_already_imported_jax_keeps_its_collector_as_it_was():
    before = gc.get_freeze_count()
    runner = cli.import_runner()
    assert runner.__name__ == "jaxnets.runner"
    assert gc.isenabled() and gc.get_freeze_count() == before
