"""The fault suite's harness: the whole system as real processes, voters, and the oracle.

``System`` runs every Tally process (both APIs, the relay, every projector) with settings of the
test's own and can kill, pause and restart each of them. ``Voters`` are users voting over HTTP
with idempotency keys, retrying every vote until it is acknowledged, and remembering what was
acknowledged. ``healed`` compares acknowledged votes, the fold of the event store and every read
model (with ``tally verify``'s own comparison), until they agree or a deadline passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
from elasticsearch import AsyncElasticsearch
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from event_store.postgres import PostgresEventStore
from kernel.auth import mint_token
from kernel.settings import Settings, as_environment
from projectors.fold import fold
from projectors.verify import read_log, verify
from tally.bootstrap import PROJECTIONS, build_projections
from tally.processes import spawn, wait_healthy
from tally.processes import stop as stop_process
from tally.status import scrape
from tests.pipeline import isolated

PROCESSES = ("command-api", "query-api", "relay", "projector")


@dataclass
class Ports:
    """The ports of one system under test (each fault test runs one system at a time)."""

    command: int = 28300
    query: int = 28301
    relay_metrics: int = 28311
    projector_metrics: int = 28312
    standby_metrics: int = 28313
    second_projector_metrics: int = 28314


def fault_settings(settings: Settings, **overrides: Any) -> Settings:
    """Settings of a system of its own: topic, groups, Redis generation and indices."""
    tag = uuid.uuid4().hex[:8]
    own: dict[str, Any] = {
        "es_comments_alias": f"test-fc-{tag}",
        "es_votes_alias": f"test-fv-{tag}",
        # Voters here are not abusive: the limiter must not be what the test measures.
        "vote_rate_limit": 100_000,
        "comment_rate_limit": 100_000,
    }
    return isolated(settings, **(own | overrides))


class System:
    """Every Tally process of one configuration, each killable and restartable."""

    def __init__(
        self, config: Settings, ports: Ports | None = None, logs: Path | None = None
    ) -> None:
        self.config = config
        self.ports = ports or Ports()
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, int] = dict.fromkeys([*PROCESSES, "standby", "projector-2"], 0)

    @property
    def command_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.command}"

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.query}"

    def _env(self) -> dict[str, str]:
        return as_environment(self.config) | {
            "TALLY_LOG_FORMAT": "json",
            "TALLY_RELAY_METRICS_PORT": str(self.ports.relay_metrics),
            "TALLY_PROJECTOR_METRICS_PORT": str(self.ports.projector_metrics),
        }

    def start(self, name: str) -> None:
        """Start one process (and wait for an API to answer)."""
        env = self._env()
        log = None
        if self.logs is not None:
            log = self.logs / f"{name}-{self.restarts[name]}.log"
        if name == "command-api":
            argv = ["serve", "command-api", "--workers", "2", "--port", str(self.ports.command)]
            proc = spawn(argv, env, log)
            wait_healthy(proc, self.ports.command)
        elif name == "query-api":
            proc = spawn(["serve", "query-api", "--port", str(self.ports.query)], env, log)
            wait_healthy(proc, self.ports.query)
        elif name == "relay":
            proc = spawn(["relay"], env, log)
        elif name == "standby":  # a second relay, on a metrics port of its own
            env["TALLY_RELAY_METRICS_PORT"] = str(self.ports.standby_metrics)
            proc = spawn(["relay"], env, log)
        elif name == "projector-2":  # a second projector process sharing the partitions
            env["TALLY_PROJECTOR_METRICS_PORT"] = str(self.ports.second_projector_metrics)
            proc = spawn(["project", "all"], env, log)
        else:
            proc = spawn(["project", "all"], env, log)
        self.procs[name] = proc
        self.restarts[name] += 1

    def start_all(self) -> None:
        for name in PROCESSES:
            self.start(name)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process (and, for an API, its workers)."""
        proc = self.procs[name]
        if sig == signal.SIGKILL:
            _kill_tree(proc.pid)
            proc.wait(10)
        else:
            proc.send_signal(sig)

    def restart(self, name: str) -> None:
        self.kill(name)
        self.start(name)

    def alive(self) -> dict[str, bool]:
        return {name: proc.poll() is None for name, proc in self.procs.items()}

    def logged(self, event: str) -> list[dict[str, Any]]:
        """Every JSON log line of any process (any incarnation) with this ``event``."""
        found = []
        for path in sorted(self.logs.glob("*.log")) if self.logs else []:
            for line in path.read_text(errors="replace").splitlines():
                if f'"{event}"' in line and line.startswith("{"):
                    with contextlib.suppress(msgspec.DecodeError):
                        found.append(msgspec.json.decode(line))
        return [entry for entry in found if entry.get("event") == event]

    def metric(self, port: int, name: str, projection: str = "") -> float | None:
        """One sample from a process's metrics port (``None`` when it does not answer)."""
        try:
            return scrape(f"http://127.0.0.1:{port}/metrics").get((name, projection))
        except OSError:
            return None

    def signal(self, name: str, sig: int) -> None:
        """Send ``sig`` to one process (SIGSTOP pauses it, SIGCONT resumes it)."""
        os.kill(self.procs[name].pid, sig)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGCONT)
            stop_process(proc)


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and every process it started (uvicorn workers)."""
    children = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    for child in children:
        _kill_tree(int(child))
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@dataclass
class Ack:
    value: int
    position: int


@dataclass
class Tally:
    """What the voters did: attempts, retries, and every acknowledged vote's latest state."""

    acked: dict[tuple[str, str], Ack] = field(default_factory=dict)
    sent: int = 0
    retries: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    longest_wait: float = 0.0
    latencies: list[float] = field(default_factory=list)  # of each acknowledged vote, in order

    def expected(self) -> dict[str, tuple[int, int]]:
        """(up, down) per comment, from the acknowledged votes alone."""
        counts: dict[str, list[int]] = {}
        for (comment, _), ack in self.acked.items():
            up_down = counts.setdefault(comment, [0, 0])
            if ack.value == 1:
                up_down[0] += 1
            elif ack.value == -1:
                up_down[1] += 1
        return {c: (u, d) for c, (u, d) in counts.items()}

    def last_position(self) -> dict[str, int]:
        """Per comment, the highest position any acknowledgement answered."""
        latest: dict[str, int] = {}
        for (comment, _), ack in self.acked.items():
            latest[comment] = max(latest.get(comment, 0), ack.position)
        return latest


class Voters:
    """``users`` voters on ``comments``, each voting every ``pause`` seconds or so."""

    def __init__(
        self,
        system: System,
        comments: list[str],
        users: int = 40,
        seed: int = 1,
        pause: float = 0.3,
    ) -> None:
        self.system = system
        self.comments = comments
        self.users = [f"voter-{seed}-{n}" for n in range(users)]
        self.rng = random.Random(seed)
        self.pause = pause
        self.tally = Tally()

    async def run(self, stop: asyncio.Event) -> None:
        """Vote until ``stop`` is set; every vote in flight is carried to its acknowledgement."""
        limits = httpx.Limits(max_connections=len(self.users))
        async with httpx.AsyncClient(
            base_url=self.system.command_url, timeout=5, limits=limits
        ) as client:
            await asyncio.gather(*(self._vote_as(client, user, stop) for user in self.users))

    async def _vote_as(self, client: httpx.AsyncClient, user: str, stop: asyncio.Event) -> None:
        token = mint_token(user, self.system.config.jwt_secret, 3600)
        headers = {"Authorization": f"Bearer {token}"}
        rng = random.Random(self.rng.random())
        while not stop.is_set():
            comment = rng.choice(self.comments)
            value = rng.choice([-1, 0, 1])
            await self._until_acked(client, headers, user, comment, value)
            await asyncio.sleep(rng.uniform(0, 2 * self.pause))

    async def _until_acked(
        self,
        client: httpx.AsyncClient,
        headers: dict[str, str],
        user: str,
        comment: str,
        value: int,
    ) -> None:
        key = uuid.uuid4().hex
        started = time.monotonic()
        delay = 0.1
        while True:
            self.tally.sent += 1
            try:
                reply = await client.put(
                    f"/api/comments/{comment}/vote",
                    json={"value": value},
                    headers=headers | {"Idempotency-Key": key},
                )
                status = reply.status_code
            except httpx.TransportError:
                status = 0
            self.tally.statuses[status] = self.tally.statuses.get(status, 0) + 1
            if status == 200:
                body = reply.json()
                self.tally.acked[(comment, user)] = Ack(body["value"], body["position"])
                waited = time.monotonic() - started
                self.tally.longest_wait = max(self.tally.longest_wait, waited)
                self.tally.latencies.append(waited)
                return
            if 400 <= status < 500 and status not in (409, 429):
                raise AssertionError(f"vote refused: {status} {reply.text}")
            self.tally.retries += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


@dataclass
class Reads:
    """What readers saw while faults happened: statuses and anything a client must never see."""

    statuses: dict[int, int] = field(default_factory=dict)
    stale: int = 0
    anomalies: list[str] = field(default_factory=list)


class Readers:
    """Clients polling scores of existing comments while the system is being hurt."""

    def __init__(self, system: System, comments: list[str], clients: int = 4) -> None:
        self.system = system
        self.comments = comments
        self.clients = clients
        self.reads = Reads()

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=self.system.query_url, timeout=5) as client:
            await asyncio.gather(*(self._read(client, stop, n) for n in range(self.clients)))

    async def _read(self, client: httpx.AsyncClient, stop: asyncio.Event, seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            comment = rng.choice(self.comments)
            try:
                reply = await client.get(f"/api/comments/{comment}/score")
                status = reply.status_code
            except httpx.TransportError:
                status = 0
            reads = self.reads
            reads.statuses[status] = reads.statuses.get(status, 0) + 1
            if status == 200:
                body = reply.json()
                reads.stale += reply.headers.get("x-tally-stale") == "true"
                if body["up"] < 0 or body["down"] < 0:
                    reads.anomalies.append(f"negative counts for {comment}: {body}")
            elif status == 404:
                reads.anomalies.append(f"404 for existing comment {comment}")
            elif status >= 500 and status != 503:
                reads.anomalies.append(f"{status} for {comment}: {reply.text[:200]}")
            await asyncio.sleep(0.05)


async def post_comments(system: System, commentable: str, count: int) -> list[str]:
    """Post ``count`` comments on ``commentable`` and wait until reads show them; their ids."""
    token = mint_token("author", system.config.jwt_secret, 3600)
    ids = []
    async with httpx.AsyncClient(base_url=system.command_url, timeout=30) as client:
        for n in range(count):
            reply = await client.post(
                "/api/comments",
                json={"commentable_id": commentable, "content": f"comment {n}"},
                headers={"Authorization": f"Bearer {token}"},
            )
            reply.raise_for_status()
            ids.append(reply.json()["id"])
            position = reply.json()["position"]
    async with httpx.AsyncClient(base_url=system.query_url, timeout=30) as client:
        deadline = time.monotonic() + 90
        for comment in ids:
            while True:
                reply = await client.get(
                    f"/api/comments/{comment}", params={"min_position": position}
                )
                if reply.status_code == 200:
                    break
                assert time.monotonic() < deadline, f"comment {comment} never showed"
                await asyncio.sleep(0.2)
    return ids


@dataclass
class Verdict:
    """The comparison of acknowledged votes, the log and every read model."""

    log_problems: list[str]
    model_problems: list[str]
    read_problems: list[str]

    @property
    def ok(self) -> bool:
        return not (self.log_problems or self.model_problems or self.read_problems)

    def __str__(self) -> str:
        lines = self.log_problems + self.model_problems + self.read_problems
        return "\n".join(lines[:30])

    def summary(self) -> dict[str, Any]:
        """How far from agreeing: problem counts, and the first of each kind."""
        kinds = {
            "log": self.log_problems,
            "models": self.model_problems,
            "reads": self.read_problems,
        }
        return {name: [len(found), found[0][:160]] for name, found in kinds.items() if found}


async def compare(
    system: System,
    tally: Tally,
    pool: AsyncConnectionPool[Any],
    redis: Redis,
    es: AsyncElasticsearch,
) -> Verdict:
    """Acknowledged votes == the fold of the log == every read model == what reads answer."""
    config = system.config
    _, events = await read_log(PostgresEventStore(pool))
    views = {str(c): v for c, v in fold(events).items()}
    log_problems = []
    for comment, (up, down) in tally.expected().items():
        view = views.get(comment)
        got = (view.up, view.down) if view else None
        if got != (up, down):
            log_problems.append(f"log: comment {comment} is {got}, acknowledged {(up, down)}")
    projections = build_projections(config, list(PROJECTIONS), redis, es)
    _, reports = await verify(PostgresEventStore(pool), projections, _no_wait, wait_seconds=0)
    model_problems = [m for r in reports for m in r.mismatches]
    read_problems = []
    expected = tally.expected()
    async with httpx.AsyncClient(base_url=system.query_url, timeout=10) as client:
        for comment, position in tally.last_position().items():
            reply = await client.get(
                f"/api/comments/{comment}/score", params={"min_position": position}
            )
            if reply.status_code != 200:
                read_problems.append(f"read: {comment} answers {reply.status_code}")
                continue
            body = reply.json()
            if (body["up"], body["down"]) != expected[comment]:
                read_problems.append(
                    f"read: {comment} shows {(body['up'], body['down'])},"
                    f" acknowledged {expected[comment]}"
                )
    return Verdict(log_problems, model_problems, read_problems)


async def until(check: Callable[[], bool], seconds: float, what: str) -> float:
    """Wait until ``check`` holds; how long it took (fails after ``seconds``)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, f"{what}: not within {seconds} s"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def _no_wait(projection: str) -> int:
    return 2**62  # compare now; ``healed`` is the wait


async def healed(check: Callable[[], Awaitable[Verdict]], seconds: float) -> tuple[float, Verdict]:
    """Wait until ``check`` agrees; return how long it took and the last verdict."""
    started = time.monotonic()
    verdict = await check()
    while not verdict.ok and time.monotonic() - started < seconds:
        await asyncio.sleep(1)
        verdict = await check()
    return time.monotonic() - started, verdict


@contextlib.contextmanager
def running_system(
    config: Settings, ports: Ports | None = None, logs: Path | None = None
) -> Iterator[System]:
    system = System(config, ports, logs)
    try:
        system.start_all()
        yield system
    finally:
        system.stop_all()


RESULTS = Path(".tally/test/faults.jsonl")


def report(name: str, **fields: Any) -> None:
    """One JSON line per fault run: printed, and appended to ``.tally/test/faults.jsonl``."""
    line = msgspec.json.encode({"fault": name, **fields}).decode()
    print(f"FAULT {line}", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as out:
        out.write(line + "\n")


@dataclass
class Run:
    """One fault run: load on a running system, the fault, then the wait for it to heal."""

    system: System
    voters: Voters
    readers: Readers
    stores: tuple[AsyncConnectionPool[Any], Redis, AsyncElasticsearch]
    # The first comparison after the load stopped: what was still catching up then.
    at_stop: Verdict = field(default_factory=lambda: Verdict([], [], []))

    async def __aenter__(self) -> Run:
        self._stop = asyncio.Event()
        self._load = asyncio.gather(self.voters.run(self._stop), self.readers.run(self._stop))
        self.started = time.monotonic()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._load, 60)

    async def finish(self, heal_seconds: float = 120) -> tuple[float, Verdict]:
        """Stop the load (every vote in flight is carried to its acknowledgement) and wait
        until acknowledged votes, the log and every read model agree."""
        self._stop.set()
        await self._load
        pool, redis, es = self.stores
        verdicts: list[Verdict] = []

        async def check() -> Verdict:
            verdicts.append(await compare(self.system, self.voters.tally, pool, redis, es))
            return verdicts[-1]

        took, verdict = await healed(check, heal_seconds)
        self.at_stop = verdicts[0]
        return took, verdict
