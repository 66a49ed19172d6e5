"""Start N local processes of one command as a multi-process JAX run.

  jaxnets launch -n 2 -- jaxnets train --devices all
  python -m jaxnets.parallel.launch -n 2 --cpu-devices 2 -- python my_script.py

Each process gets ``JAXNETS_COORDINATOR=127.0.0.1:PORT`` (a free port),
``JAXNETS_NUM_PROCESSES=N`` and ``JAXNETS_PROCESS_ID=i``, which
`jaxnets.parallel.initialize` reads. Their output is streamed line by line
with a ``[i]`` prefix. If one exits with an error the others are stopped
at once (a multi-process JAX run cannot continue without a peer: left alone
they would abort only after the heartbeat timeout) and the launcher exits
with the failing process's code after repeating its last error lines. A
command starting with ``jaxnets`` runs as ``python -m jaxnets.cli`` with this
interpreter. This module does not import JAX.

Example:
  >>> import sys
  >>> code = "import os; print(os.environ['JAXNETS_PROCESS_ID'])"
  >>> launch([sys.executable, "-c", code], 2, stdout=sys.stdout)  # doctest: +SKIP
  [0] 0
  [1] 1
  0
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time

ENV_COORDINATOR = "JAXNETS_COORDINATOR"
ENV_NUM_PROCESSES = "JAXNETS_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXNETS_PROCESS_ID"
TAIL_LINES = 20


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resolve_command(command: list[str]) -> list[str]:
    """The command to run; ``jaxnets ...`` becomes ``python -m jaxnets.cli ...``.

    Example:
      >>> resolve_command(["jaxnets", "train"])[1:]
      ['-m', 'jaxnets.cli', 'train']
    """
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ValueError("no command to launch; put it after --, e.g. -- jaxnets train")
    if command[0] == "jaxnets":
        return [sys.executable, "-m", "jaxnets.cli", *command[1:]]
    return list(command)


def _pump(stream, rank: int, out, lock: threading.Lock, tail: collections.deque):
    writable = True
    for line in iter(stream.readline, ""):
        tail.append(line.rstrip("\n"))
        if not writable:
            continue  # keep draining, or the child would block on a full pipe
        with lock:
            try:
                out.write(f"[{rank}] {line}" if line.endswith("\n") else f"[{rank}] {line}\n")
                out.flush()
            except (BrokenPipeError, ValueError):  # e.g. piped into `head`
                writable = False
    stream.close()


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _stop(procs: list[subprocess.Popen], grace: float):
    # Each child leads its own process group: signal the group, by its id.
    # A group that exited between the poll and the signal is already stopped.
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def launch(
    command: list[str],
    num_processes: int,
    *,
    port: int | None = None,
    cpu_devices: int | None = None,
    env: dict | None = None,
    grace: float = 5.0,
    timeout: float | None = None,
    stdout=None,
    stderr=None,
) -> int:
    """Runs ``command`` in ``num_processes`` local processes; returns the exit code.

    Args:
      command: the program and its arguments.
      num_processes: how many processes (ranks ``0 .. N-1``).
      port: the coordinator's port on 127.0.0.1 (default: a free one).
      cpu_devices: fake CPU devices per process (sets ``JAX_NUM_CPU_DEVICES``).
      env: extra environment variables for every process.
      grace: seconds between SIGTERM and SIGKILL when stopping processes.
      timeout: stop every process after this many seconds (exit code 124).
      stdout, stderr: where prefixed output goes (default ``sys.stdout``/``sys.stderr``).

    Returns:
      0 if every process succeeded, else the first failing process's exit
      code (``128 + signal`` if a signal killed it), or 124 on ``timeout``.
    """
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"num_processes must be a positive int, got {num_processes!r}.")
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    command = resolve_command(command)
    port = port or free_port()
    lock = threading.Lock()
    procs, pumps, tails = [], [], []
    try:
        for rank in range(num_processes):
            child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
            child_env[ENV_COORDINATOR] = f"127.0.0.1:{port}"
            child_env[ENV_NUM_PROCESSES] = str(num_processes)
            child_env[ENV_PROCESS_ID] = str(rank)
            if cpu_devices:
                child_env["JAX_NUM_CPU_DEVICES"] = str(cpu_devices)
            p = subprocess.Popen(
                command,
                env=child_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                process_group=0,
            )
            procs.append(p)
            tail = collections.deque(maxlen=TAIL_LINES)
            tails.append(tail)
            for stream, out in ((p.stdout, stdout), (p.stderr, stderr)):
                t = threading.Thread(
                    target=_pump, args=(stream, rank, out, lock, tail), daemon=True
                )
                t.start()
                pumps.append(t)
        failed, deadline = None, None if timeout is None else time.monotonic() + timeout
        while failed is None and any(p.poll() is None for p in procs):
            failed = next((r for r, p in enumerate(procs) if (p.poll() or 0) != 0), None)
            if deadline is not None and time.monotonic() > deadline:
                _stop(procs, grace)
                stderr.write(
                    f"jaxnets launch: timed out after {timeout:g}s; stopped every process.\n"
                )
                return 124
            time.sleep(0.05)
        if failed is None:
            failed = next((r for r, p in enumerate(procs) if p.returncode != 0), None)
        if failed is None:
            return 0
        code = procs[failed].returncode
        others = [p for r, p in enumerate(procs) if r != failed and p.poll() is None]
        _stop(others, grace)
        for t in pumps:
            t.join(timeout=2.0)
        with lock:
            stderr.write(
                f"jaxnets launch: process {failed} {_describe(code)}; stopped "
                f"{len(others)} other process(es). Its last lines:\n"
            )
            stderr.writelines(f"  [{failed}] {line}\n" for line in tails[failed])
            stderr.flush()
        return code if code > 0 else 128 + (-code)
    finally:
        _stop([p for p in procs if p.poll() is None], grace)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The launcher's options (shared by ``jaxnets launch`` and ``python -m``)."""
    parser.add_argument("-n", "--num-processes", type=int, required=True, help="processes to start")
    parser.add_argument("--port", type=int, default=None, help="coordinator port (default: free)")
    parser.add_argument(
        "--cpu-devices",
        type=int,
        default=None,
        help="fake CPU devices per process (sets JAX_NUM_CPU_DEVICES; for tests on one machine)",
    )
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")
    return parser


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # runs launch()'s finally: the children are stopped


def run(args: argparse.Namespace) -> int:
    """Runs a parsed ``launch`` command line; stops the children on SIGTERM or Ctrl-C."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return launch(args.cmd, args.num_processes, port=args.port, cpu_devices=args.cpu_devices)
    except ValueError as e:
        print(f"jaxnets launch: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jaxnets.parallel.launch",
        description="Start N local processes of a command as one multi-process JAX run.",
    )
    return run(add_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
