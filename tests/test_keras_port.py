"""The Keras ports in experiments/keras_port run (with --quick) in a fresh interpreter."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PORTS = ROOT / "experiments" / "keras_port"
# Accuracy each --quick run must beat (10 classes: chance 0.1); the short LSTM and
# Transformer runs only have to finish with finite numbers.
FLOORS = {"cnn": 0.4, "mlp": 0.4, "lstm": 0.0, "transformer": 0.0}


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("script", sorted(FLOORS))
def test_port_runs_quick(script):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(PORTS / f"{script}.py"), "--quick"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    match = re.search(r"RESULT \w+: test_loss=(\S+) test_accuracy=(\S+)", proc.stdout)
    assert match, proc.stdout[-2000:]
    loss, accuracy = float(match.group(1)), float(match.group(2))
    assert math.isfinite(loss) and accuracy > FLOORS[script]
