"""End-to-end fixtures: real service processes started with the ``tally`` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tally.settings import Settings


def start_service(
    settings: Settings, service: str, port: int, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Run ``tally serve SERVICE`` on ``port`` and wait until /health answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tally.cli", "serve", service, "--port", str(port)],
        env={**os.environ, "TALLY_LOG_FORMAT": "json", **(env or {})},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{service} exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{service} did not answer on port {port}")


def start_process(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Run ``tally ARGV...`` in the background with ``env`` added."""
    return subprocess.Popen(
        [sys.executable, "-m", "tally.cli", *argv],
        env={**os.environ, "TALLY_LOG_FORMAT": "json", **env},
    )


def stop_service(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module", params=["group-commit", "one-transaction-per-command"])
def command_api(request: pytest.FixtureRequest, settings: Settings) -> Iterator[str]:
    """Base URL of a 2-worker command API process, with group commit on, then off."""
    port = settings.command_api_port
    env = {
        "TALLY_GROUP_COMMIT": str(request.param == "group-commit").lower(),
        "TALLY_COMMAND_API_WORKERS": "2",
    }
    proc = start_service(settings, "command-api", port, env)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_service(proc)
