"""``tally run`` says ready only when everything is, and restarts a process that dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import httpx

from kernel.auth import mint_token
from kernel.settings import Settings, as_environment
from tests.pipeline import isolated

PORTS = {
    "TALLY_COMMAND_API_PORT": 28400,
    "TALLY_QUERY_API_PORT": 28401,
    "TALLY_RELAY_METRICS_PORT": 28411,
    "TALLY_PROJECTOR_METRICS_PORT": 28412,
}


class Output:
    """The lines a process prints, collected as they come."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        stream = proc.stdout
        threading.Thread(target=lambda: self.lines.extend(stream), daemon=True).start()

    def wait_for(self, text: str, seconds: float, times: int = 1) -> float:
        started = time.monotonic()
        while sum(text in line for line in self.lines) < times:
            assert time.monotonic() - started < seconds, f"no {text!r}: {self.lines[-20:]}"
            time.sleep(0.1)
        return time.monotonic() - started


def _children(pid: int) -> dict[int, str]:
    found = subprocess.run(
        ["pgrep", "-a", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return {int(line.split()[0]): line for line in found.splitlines()}


def test_tally_run_is_ready_when_all_is_and_restarts_a_dead_projector(settings: Settings) -> None:
    tag = uuid.uuid4().hex[:8]
    config = isolated(settings, es_comments_alias=f"test-rc-{tag}", es_votes_alias=f"test-rv-{tag}")
    env = {**os.environ, **as_environment(config), **{k: str(v) for k, v in PORTS.items()}}
    env |= {"TALLY_LOG_FORMAT": "json", "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tally.cli", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output = Output(proc)
    command = f"http://127.0.0.1:{PORTS['TALLY_COMMAND_API_PORT']}"
    try:
        output.wait_for("ready:", 120)
        # Ready means ready: the APIs answer and the projectors have caught up.
        assert httpx.get(f"{command}/ready", timeout=5).status_code == 200
        projector = next(pid for pid, line in _children(proc.pid).items() if "project all" in line)
        os.kill(projector, signal.SIGKILL)
        killed = time.monotonic()
        output.wait_for("exited with code -9; restarting", 15)
        for _ in range(10):  # the others keep serving meanwhile
            assert httpx.get(f"{command}/health", timeout=5).status_code == 200
            time.sleep(0.1)
        output.wait_for("started tally project all", 15, times=2)
        assert projector not in _children(proc.pid)
        print(f"projector running again {time.monotonic() - killed:.1f} s after the kill")
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        code = proc.wait(60)
    assert code == 0
    output.wait_for("services stopped", 5)
    assert _children(proc.pid) == {}


def test_a_vote_sent_the_moment_ready_appears_is_readable_with_its_position(
    settings: Settings,
) -> None:
    """Ten starts in a row: ready means every partition is read, not just "caught up"."""
    tag = uuid.uuid4().hex[:8]
    config = isolated(settings, es_comments_alias=f"test-rc-{tag}", es_votes_alias=f"test-rv-{tag}")
    env = {**os.environ, **as_environment(config), **{k: str(v) for k, v in PORTS.items()}}
    env |= {"TALLY_LOG_FORMAT": "json", "COLUMNS": "200"}
    command = f"http://127.0.0.1:{PORTS['TALLY_COMMAND_API_PORT']}"
    query = f"http://127.0.0.1:{PORTS['TALLY_QUERY_API_PORT']}"
    token = {"Authorization": f"Bearer {mint_token('reader', settings.jwt_secret, 3600)}"}
    comment = ""
    answers: list[int] = []
    for start in range(10):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tally.cli", "run"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        output = Output(proc)
        try:
            output.wait_for("ready:", 120)
            with httpx.Client(timeout=30) as client:
                if not comment:
                    posted = client.post(
                        f"{command}/api/comments",
                        json={"commentable_id": f"ready-{tag}", "content": "ready?"},
                        headers=token,
                    )
                    comment = posted.json()["id"]
                voted = client.put(
                    f"{command}/api/comments/{comment}/vote",
                    json={"value": 1 if start % 2 else -1},
                    headers=token,
                )
                assert voted.status_code == 200, voted.text
                read = client.get(
                    f"{query}/api/comments/{comment}/score",
                    params={"min_position": voted.json()["position"]},
                )
                answers.append(read.status_code)
                assert read.status_code == 200, (start, read.text)
                assert read.json()["score"] == (1 if start % 2 else -1)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
    assert answers == [200] * 10
