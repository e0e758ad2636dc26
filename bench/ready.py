"""``tally run``: from ``ready:`` to a vote being readable, and from a projector's death to it.

    python -m bench.ready [--restarts 5] [--kills 3] [--spacing 65]

Starts ``tally run`` on the `make run` stack (own database, topic, groups, keyspace and ports)
``--restarts`` times. Each time, the moment ``ready:`` is printed, a vote is cast on a comment
recorded before the start and read back with ``min_position``: the time from the ready line to
that answer. Then, on the last run, the projector process is SIGKILLed ``--kills`` times,
``--spacing`` seconds apart (more than the supervisor's minute of stability, so each restart
comes after its first backoff, as after a lone crash); after each kill a vote is cast and read
with ``min_position`` until it answers: the time from the kill to a readable vote.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import msgspec
import psycopg
import uvloop

from bench.common import (
    bench_settings,
    drop_keyspace,
    fresh_bench_database,
    percentile,
    prepare_stack,
    report,
)
from event_store.seed import SeedPlan, seed
from kernel.auth import mint_token
from kernel.settings import Settings, as_environment, get_settings

PORTS = {
    "TALLY_COMMAND_API_PORT": 18500,
    "TALLY_QUERY_API_PORT": 18501,
    "TALLY_WEB_PORT": 18502,
    "TALLY_RELAY_METRICS_PORT": 18511,
    "TALLY_PROJECTOR_METRICS_PORT": 18512,
    "TALLY_COMMAND_API_METRICS_PORT": 18513,
    "TALLY_QUERY_API_METRICS_PORT": 18514,
}
COMMAND = f"http://127.0.0.1:{PORTS['TALLY_COMMAND_API_PORT']}"
QUERY = f"http://127.0.0.1:{PORTS['TALLY_QUERY_API_PORT']}"


class Run:
    """One ``tally run`` in the background, its output lines timed as they come."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tally.cli", "run"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line))

    def wait_for(self, text: str, seconds: float, after: float = 0.0) -> float:
        """When a line holding ``text`` (printed after ``after``) appeared."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for at, line in list(self.lines):
                if at >= after and text in line:
                    return at
            time.sleep(0.002)
        tail = "".join(line for _, line in self.lines[-15:])
        raise RuntimeError(f"no {text!r} within {seconds} s:\n{tail}")

    def projector_pid(self) -> int:
        found = subprocess.run(
            ["pgrep", "-f", "-P", str(self.proc.pid), "project all"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        return int(found[0])

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def vote_and_read(client: httpx.Client, token: str, comment: str, value: int) -> tuple[int, int]:
    """Cast a vote, then read its score with its position until it answers 200: (position,
    how many reads answered 504 first)."""
    voted = client.put(
        f"{COMMAND}/api/comments/{comment}/vote",
        json={"value": value},
        headers={"Authorization": f"Bearer {token}"},
    )
    voted.raise_for_status()
    position = voted.json()["position"]
    timeouts = 0
    while True:
        read = client.get(
            f"{QUERY}/api/comments/{comment}/score", params={"min_position": position}
        )
        if read.status_code == 200:
            return position, timeouts
        if read.status_code != 504:
            raise RuntimeError(f"read answered {read.status_code}: {read.text}")
        timeouts += 1


def seeded_comment(settings: Settings) -> str:
    """Seed a small history (write model and outbox too) before the start; one comment's id."""
    uvloop.run(seed(settings.pg_dsn, SeedPlan(events=200, commentables=2, comments=20)))
    with psycopg.connect(settings.pg_dsn) as conn:
        row = conn.execute("SELECT comment_id FROM comments LIMIT 1").fetchone()
    assert row is not None
    return str(row[0])


def measure(settings: Settings, restarts: int, kills: int, spacing: float) -> dict[str, Any]:
    env = {**os.environ, **as_environment(settings), **{k: str(v) for k, v in PORTS.items()}}
    env |= {"TALLY_ENV": "local", "TALLY_LOG_FORMAT": "json", "TALLY_LOG_LEVEL": "warning"}
    env |= {"TALLY_VOTE_RATE_LIMIT": "100000", "COLUMNS": "300"}
    comment = seeded_comment(settings)
    tokens = [mint_token(f"ready-{n}", settings.jwt_secret, 3600) for n in range(100)]
    to_readable: list[float] = []
    to_ready: list[float] = []
    late_reads = 0
    failovers: list[float] = []
    with httpx.Client(timeout=30) as client:
        for n in range(restarts):
            started = time.monotonic()
            run = Run(env)
            try:
                ready = run.wait_for("ready:", 180)
                to_ready.append(ready - started)
                _, timeouts = vote_and_read(client, tokens[n], comment, 1)
                to_readable.append(time.monotonic() - ready)
                late_reads += timeouts
                if n == restarts - 1:
                    failovers = kill_projector(run, client, tokens, comment, kills, spacing)
            finally:
                run.stop()
    to_readable.sort()
    return {
        "restarts": restarts,
        "start_to_ready_s": [round(s, 1) for s in to_ready],
        "ready_to_readable_ms": [round(s * 1000, 1) for s in to_readable],
        "ready_to_readable_p50_ms": round(percentile(to_readable, 0.5) * 1000, 1),
        "ready_to_readable_max_ms": round(to_readable[-1] * 1000, 1),
        "reads_answered_504": late_reads,
        "kill_spacing_s": spacing,
        "kill_to_readable_s": [round(s, 2) for s in failovers],
        "kill_to_readable_max_s": round(max(failovers), 2) if failovers else None,
    }


def kill_projector(
    run: Run, client: httpx.Client, tokens: list[str], comment: str, kills: int, spacing: float
) -> list[float]:
    """SIGKILL the projector ``kills`` times; per kill, seconds until a vote cast at once is
    readable."""
    taken = []
    for n in range(kills):
        time.sleep(spacing if n else 3)  # a steady system between kills
        pid = run.projector_pid()
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        vote_and_read(client, tokens[50 + n], comment, -1 if n % 2 else 1)
        taken.append(time.monotonic() - killed)
        run.wait_for("started tally project all", 30, after=killed)
    return taken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--spacing", type=float, default=65.0)
    args = parser.parse_args()
    prepare_stack(get_settings())
    settings = bench_settings(get_settings())
    tag = settings.redis_generation
    settings = msgspec.structs.replace(
        settings, es_comments_alias=f"{tag}-comments", es_votes_alias=f"{tag}-votes"
    )
    uvloop.run(fresh_bench_database(settings))
    try:
        result = measure(settings, args.restarts, args.kills, args.spacing)
    finally:
        uvloop.run(drop_keyspace(settings))
    print(
        f"ready to readable: p50 {result['ready_to_readable_p50_ms']} ms, max"
        f" {result['ready_to_readable_max_ms']} ms; kill to readable: max"
        f" {result['kill_to_readable_max_s']} s",
        file=sys.stderr,
    )
    report("ready", result)


if __name__ == "__main__":
    main()
