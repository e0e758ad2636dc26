"""Start and stop ``tally`` processes: for ``tally run``, the benchmarks and the e2e tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def spawn(
    argv: list[str], env: dict[str, str] | None = None, output: Path | None = None
) -> subprocess.Popen[bytes]:
    """Run ``tally ARGV...`` in the background, with ``env`` added to this environment.

    Its stdout and stderr go to ``output`` (appended) when given, else to ours.
    """
    command = [sys.executable, "-m", "tally.cli", *argv]
    environment = {**os.environ, **(env or {})}
    if output is None:
        return subprocess.Popen(command, env=environment)
    with open(output, "ab") as log:
        return subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)


def wait_healthy(proc: subprocess.Popen[bytes], port: int, seconds: float = 60) -> None:
    """Wait until the HTTP service on ``port`` answers ``/health``; fail clearly otherwise."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{proc.args!r} did not answer on port {port} within {seconds:.0f} s")


def serve(
    service: str, port: int, env: dict[str, str] | None = None, workers: int | None = None
) -> subprocess.Popen[bytes]:
    """``tally serve SERVICE`` on ``port``, once it answers."""
    argv = ["serve", service, "--port", str(port)]
    if workers:
        argv += ["--workers", str(workers)]
    proc = spawn(argv, env)
    wait_healthy(proc, port)
    return proc


def stop(proc: subprocess.Popen[bytes], seconds: float = 15) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
