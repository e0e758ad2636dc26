"""tally run's supervisor restarts what exits, with backoff, and leaves the others alone."""

from __future__ import annotations

import subprocess

from tally.supervisor import Backoff, Supervisor, projections_ready


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

    def spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        started.append(argv)
        return FakeProcess()  # type: ignore[return-value]

    processes = [(["relay"], {}), (["project", "all"], {"TALLY_PROJECTOR_INSTANCE": "run-1"})]
    supervisor = Supervisor(processes, spawn, said.append, lambda: now[0])
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


def _process(**projections: tuple[float, float, float]) -> dict[tuple[str, str], float]:
    """A projector process's metrics: per projection (ready, partitions consuming, topic's)."""
    samples = {}
    for name, (ready, consuming, topic) in projections.items():
        samples[("tally_projector_ready", name)] = ready
        samples[("tally_projector_partitions_consuming", name)] = consuming
        samples[("tally_projector_topic_partitions", name)] = topic
    return samples


def test_a_projection_is_ready_only_once_its_partitions_add_up_to_the_topic() -> None:
    whole = _process(redis=(1, 6, 6))
    assert projections_ready([whole], ["redis"])
    assert not projections_ready([_process(redis=(0, 0, 6))], ["redis"])  # not assigned yet
    assert not projections_ready([_process(redis=(1, 4, 6))], ["redis"])  # 2 left unread
    halves = [_process(redis=(1, 3, 6)), _process(redis=(1, 3, 6))]
    assert projections_ready(halves, ["redis"])
    behind = [_process(redis=(1, 3, 6)), _process(redis=(0, 3, 6))]  # one has not caught up
    assert not projections_ready(behind, ["redis"])
    standby = [whole, _process(redis=(0, 0, 6))]  # holds nothing: does not count
    assert projections_ready(standby, ["redis"])
    assert not projections_ready([whole], ["redis", "votes"])  # votes not reported at all
