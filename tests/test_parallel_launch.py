"""`jaxnets launch`: N local processes, prefixed output, fail fast (plain Python children)."""

import io
import subprocess
import sys
import time

import pytest

from jaxnets.parallel import launch as launch_lib

pytestmark = pytest.mark.subprocess


def run(code: str, n: int = 2, **kwargs):
    out, err = io.StringIO(), io.StringIO()
    start = time.monotonic()
    rc = launch_lib.launch([sys.executable, "-c", code], n, stdout=out, stderr=err, **kwargs)
    return rc, out.getvalue(), err.getvalue(), time.monotonic() - start


def test_every_process_gets_its_rank_and_the_coordinator():
    code = (
        "import os; e = os.environ; print(e['JAXNETS_PROCESS_ID'], e['JAXNETS_NUM_PROCESSES'], "
        "e['JAXNETS_COORDINATOR'], e['JAX_NUM_CPU_DEVICES'])"
    )
    rc, out, _, _ = run(code, 3, port=12345, cpu_devices=2)
    assert rc == 0
    assert sorted(out.splitlines()) == [f"[{i}] {i} 3 127.0.0.1:12345 2" for i in range(3)]


def test_a_failing_process_stops_the_others_and_its_error_is_repeated():
    # Rank 1 fails at once; rank 0 would sleep for a minute.
    code = (
        "import os, sys, time\n"
        "if os.environ['JAXNETS_PROCESS_ID'] == '1':\n"
        "    sys.exit('rank one broke')\n"
        "time.sleep(60)\n"
    )
    rc, _, err, seconds = run(code, 2, grace=2.0)
    assert rc == 1
    assert seconds < 20
    assert "process 1 exited with code 1; stopped 1 other process(es)" in err
    assert "[1] rank one broke" in err


def test_a_process_killed_by_a_signal_gives_128_plus_the_signal():
    code = "import os, signal; os.kill(os.getpid(), signal.SIGABRT)"
    rc, _, err, _ = run(code, 1)
    assert rc == 128 + 6
    assert "killed by SIGABRT" in err


def test_jaxnets_commands_run_with_this_interpreter():
    assert launch_lib.resolve_command(["--", "jaxnets", "models"]) == [
        sys.executable,
        "-m",
        "jaxnets.cli",
        "models",
    ]
    with pytest.raises(ValueError, match="no command"):
        launch_lib.resolve_command(["--"])


def test_python_dash_m_entry_point_reports_failure():
    code = "import sys; sys.exit(3)"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxnets.parallel.launch",
            "-n",
            "2",
            "--",
            sys.executable,
            "-c",
            code,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3
    assert "exited with code 3" in proc.stderr
