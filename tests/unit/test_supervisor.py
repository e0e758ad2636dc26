"""tally run's supervisor restarts what exits, with backoff, and leaves the others alone."""

from __future__ import annotations

import subprocess

from tally.supervisor import Backoff, Supervisor


def test_backoff_doubles_while_a_process_keeps_failing_and_resets_once_it_stays_up() -> None:
    backoff = Backoff()
    backoff.started(0)
    assert [backoff.exited(t) for t in (1, 2, 3, 4, 5, 6, 7)] == [1, 2, 4, 8, 16, 30, 30]
    backoff.started(100)
    assert backoff.exited(200) == 1  # up for over a minute: a fresh start


class FakeProcess:
    """Stands in for a child process: exits when told."""

    pids = iter(range(100, 200))

    def __init__(self) -> None:
        self.pid = next(self.pids)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


def test_an_exited_process_is_restarted_after_its_backoff_and_the_others_keep_running() -> None:
    now = [0.0]
    started: list[list[str]] = []
    said: list[str] = []

    def spawn(argv: list[str]) -> subprocess.Popen[bytes]:
        started.append(argv)
        return FakeProcess()  # type: ignore[return-value]

    supervisor = Supervisor([["relay"], ["project", "all"]], spawn, said.append, lambda: now[0])
    supervisor.start()
    relay, projectors = (c.proc for c in supervisor.children)
    projectors.returncode = 1  # type: ignore[union-attr]
    now[0] = 5
    supervisor.tend()
    assert "exited with code 1; restarting in 1 s" in said[-1]
    supervisor.tend()
    assert len(started) == 2  # not yet
    now[0] = 6
    supervisor.tend()
    assert started[-1] == ["project", "all"] and supervisor.children[1].restarts == 1
    assert supervisor.children[0].proc is relay  # untouched
