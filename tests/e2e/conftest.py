"""End-to-end fixtures: real service processes started with the ``tally`` CLI.

The users of these tests post many comments in a few seconds: the comment rate limit is raised
for them (the limits themselves are tested in ``tests/security``).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from kernel.auth import mint_token
from kernel.settings import Settings, as_environment
from tally.processes import serve, spawn
from tally.processes import stop as stop_service

E2E_ENV = {"TALLY_LOG_FORMAT": "json"}
BUSY_USERS = {"TALLY_COMMENT_RATE_LIMIT": "100000"}


def start_service(
    settings: Settings, service: str, port: int, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Run ``tally serve SERVICE`` on ``port`` and wait until /health answers."""
    return serve(service, port, {**E2E_ENV, **(env or {}), **BUSY_USERS})


def start_process(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Run ``tally ARGV...`` in the background with ``env`` added."""
    return spawn(argv, {**E2E_ENV, **env, **BUSY_USERS})


def start_system(
    config: Settings, command_port: int, query_port: int
) -> list[subprocess.Popen[bytes]]:
    """Command API, query API, relay and every projector, as processes."""
    env = as_environment(config)
    return [
        start_service(config, "command-api", command_port, env),
        start_service(config, "query-api", query_port, env),
        start_process(["relay"], env),
        start_process(["project", "all"], env),
    ]


def wait_until_projected(config: Settings, command_port: int, query_port: int) -> None:
    """Post a warm-up comment and wait until the query API lists it (projectors joined, read
    models live)."""
    token = mint_token("warmup", config.jwt_secret, 600)
    posted = httpx.post(
        f"http://127.0.0.1:{command_port}/api/comments",
        json={"commentable_id": "warmup", "content": "warm up"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ).json()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        reply = httpx.get(
            f"http://127.0.0.1:{query_port}/api/commentables/warmup/comments",
            params={"min_position": posted["position"]},
            timeout=10,
        )
        if reply.status_code == 200:
            return
    raise AssertionError("the projectors did not catch up within 90 s")


@contextlib.contextmanager
def running_system(
    config: Settings, command_port: int, query_port: int, web_port: int | None = None
) -> Iterator[Settings]:
    """The whole system (and the web page's server) as processes, once the read models are
    live; stopped on the way out."""
    procs = start_system(config, command_port, query_port)
    if web_port is not None:
        procs.append(start_service(config, "web", web_port, as_environment(config)))
    try:
        wait_until_projected(config, command_port, query_port)
        yield config
    finally:
        for proc in procs:
            stop_service(proc)


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
