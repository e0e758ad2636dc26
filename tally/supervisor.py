"""``tally run``'s supervisor: keep every process running, restart what exits, say when ready.

A process that exits is logged and started again after a backoff (doubling from 1 s up to 30 s,
back to 1 s once it stayed up for a minute); the others keep serving. ``ready`` is announced
once, when every process answers: both APIs' ``/ready``, a relay leading, and every projection
caught up with the log and read on every partition of the topic (the partitions each projector
process reports on its metrics port, added up).
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from tally.status import scrape

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
STABLE_SECONDS = 60.0


@dataclass
class Backoff:
    """How long to wait before restarting a process that exited (pure: times are passed in)."""

    delay: float = 0.0
    started_at: float = 0.0

    def started(self, now: float) -> None:
        self.started_at = now

    def exited(self, now: float) -> float:
        """The process exited at ``now``: the wait before starting it again."""
        if now - self.started_at >= STABLE_SECONDS:
            self.delay = FIRST_BACKOFF
        else:
            self.delay = min(MAX_BACKOFF, max(FIRST_BACKOFF, self.delay * 2))
        return self.delay


@dataclass
class Supervised:
    """One process under supervision."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    backoff: Backoff = field(default_factory=Backoff)
    restart_at: float | None = None
    restarts: int = 0


class Supervisor:
    """Starts ``processes`` with ``spawn`` and keeps them running."""

    def __init__(
        self,
        processes: list[tuple[list[str], dict[str, str]]],
        spawn: Callable[[list[str], dict[str, str]], subprocess.Popen[bytes]],
        say: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.children = [Supervised(argv, env) for argv, env in processes]
        self._spawn = spawn
        self._say = say
        self._clock = clock

    def start(self) -> None:
        for child in self.children:
            self._start(child)

    def _start(self, child: Supervised) -> None:
        child.proc = self._spawn(child.argv, child.env)
        child.backoff.started(self._clock())
        child.restart_at = None
        self._say(f"started tally {' '.join(child.argv)} (pid {child.proc.pid})")

    def tend(self) -> None:
        """Notice exits, schedule restarts, and start what is due; call it often."""
        now = self._clock()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restarts += 1
                    self._start(child)
                continue
            if child.proc is not None and child.proc.poll() is not None:
                wait = child.backoff.exited(now)
                child.restart_at = now + wait
                self._say(
                    f"[red]tally {' '.join(child.argv)} exited with code {child.proc.returncode};"
                    f" restarting in {wait:.0f} s (the others keep serving)"
                )

    def stop(self, stop_process: Callable[[subprocess.Popen[bytes]], None]) -> None:
        """SIGTERM every process, then wait for each (SIGKILL past its grace)."""
        running = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        for proc in running:
            proc.terminate()
        for proc in running:
            stop_process(proc)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def projections_ready(
    processes: list[dict[tuple[str, str], float]], projections: list[str]
) -> bool:
    """Is every projection read on every partition of its topic, by processes that caught up?

    ``processes``: each projector process's metrics. A process that holds no partition (more
    processes than partitions) waits as a standby and does not count.
    """

    def ready(name: str) -> bool:
        holding = [p for p in processes if p.get(("tally_projector_partitions_consuming", name))]
        consuming = sum(p[("tally_projector_partitions_consuming", name)] for p in holding)
        topic = max(
            (p.get(("tally_projector_topic_partitions", name), 0) for p in holding), default=0
        )
        caught_up = all(p.get(("tally_projector_ready", name)) == 1 for p in holding)
        return bool(holding) and caught_up and consuming >= topic > 0

    return all(ready(name) for name in projections)


def system_ready(
    command_url: str,
    query_url: str,
    relay_metrics: str,
    projector_metrics: list[str],
    projections: list[str],
) -> bool:
    """Do the APIs answer ``/ready``, is a relay leading, and is every projection caught up and
    read on every partition?"""
    if not (_answers(f"{command_url}/ready") and _answers(f"{query_url}/ready")):
        return False
    try:
        relay = scrape(relay_metrics)
        projectors = [scrape(url) for url in projector_metrics]
    except OSError:
        return False
    leading = relay.get(("tally_relay_leader", ""), 0) == 1
    return leading and projections_ready(projectors, projections)
