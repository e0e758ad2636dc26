"""Logs of a served, multi-worker API: one JSON object per line, with service and request id."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from kernel.settings import Settings, as_environment
from tally.processes import stop, wait_healthy

PORT = 28210


def test_every_worker_logs_json_lines_with_its_service_and_the_request_id(
    settings: Settings, tmp_path: Path
) -> None:
    stderr = tmp_path / "stderr"
    env = {**os.environ, **as_environment(settings), "TALLY_LOG_FORMAT": "json"}
    argv = ["serve", "command-api", "--port", str(PORT), "--workers", "2"]
    with stderr.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "tally.cli", *argv], env=env, stderr=sink)
        try:
            wait_healthy(proc, PORT)
            with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=10) as client:
                for n in range(20):  # new connections: both workers answer some
                    reply = client.post(
                        "/api/comments",
                        json={"commentable_id": "p", "content": "x"},
                        headers={"Authorization": "Bearer nope", "X-Request-ID": f"req-log-{n}"},
                    )
                    assert reply.status_code == 401
        finally:
            stop(proc)
    lines = [line for line in stderr.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    failed = [e for e in entries if e["event"] == "request_failed"]
    assert sorted(e["correlation_id"] for e in failed) == sorted(f"req-log-{n}" for n in range(20))
    assert {(e["service"], e["level"], e["status"]) for e in failed} == {
        ("command-api", "info", 401)
    }
    assert all("timestamp" in e for e in entries)
    assert "nope" not in stderr.read_text()
