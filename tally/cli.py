"""The ``tally`` command: one entry point for every process and operator task."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import msgspec
from rich.console import Console
from rich.table import Table

from kernel.settings import Settings, SettingsError, get_settings

if TYPE_CHECKING:
    from projectors.replay import Progress

console = Console(stderr=True, soft_wrap=True)  # one message, one line: greppable


def _stack(args: argparse.Namespace, settings: Settings) -> int:
    from tally import stack

    if args.data_dir:
        settings = msgspec.structs.replace(settings, data_dir=args.data_dir)
    action = args.action
    if action == "up":
        stack.stack_up(settings, console.print)
    elif action == "down":
        stack.stack_down(settings, console.print)
    elif action == "reset":
        stack.stack_reset(settings, console.print)
    else:
        table = Table("server", "port", "pid", "state", "data")
        rows = stack.stack_status(settings)
        for row in rows:
            state = f"[green]{row.detail}" if row.running else f"[red]{row.detail}"
            table.add_row(row.name, str(row.port), str(row.pid or "-"), state, row.data)
        Console().print(table)
        return 0 if all(r.running for r in rows) else 1
    return 0


def _backup(args: argparse.Namespace, settings: Settings) -> int:
    from tally.backup import Backups
    from tally.stack import postgres_server

    backups = Backups(postgres_server(settings))
    if not args.list:
        console.print(f"backing up PostgreSQL ({args.type}) into {backups.repository}...")
        backups.backup(args.type)
    found = backups.list()
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    table = Table("backup", "type", "started", "took", "size", "WAL from", "WAL to")
    for b in found:
        started, stopped = b["timestamp"]["start"], b["timestamp"]["stop"]
        table.add_row(
            b["label"],
            b["type"],
            datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
            f"{stopped - started} s",
            f"{b['info']['repository']['delta'] / 1e6:.1f} MB",
            b["archive"]["start"],
            b["archive"]["stop"],
        )
    Console().print(table)
    return 0


def _restore(args: argparse.Namespace, settings: Settings) -> int:
    from tally.backup import Backups
    from tally.stack import postgres_server

    backups = Backups(postgres_server(settings))
    target = Path(args.to).resolve()
    if args.stop:
        backups.stop_restored(target)
        console.print(f"stopped the server of {target}")
        return 0
    until = f" up to {args.time}" if args.time else ""
    console.print(f"restoring the latest backup into {target}{until}...")
    restored = backups.restore(target, args.port, args.time)
    database = urlsplit(settings.pg_dsn).path.lstrip("/") or "postgres"
    console.print(f"running on port {restored.port} (log: {restored.log_file}); use it with")
    print(f"TALLY_PG_DSN={restored.dsn(database)}")
    return 0


def _migrate(settings: Settings) -> int:
    from event_store.migrate import ensure_database, migrate

    async def run() -> list[str]:
        if await ensure_database(settings.pg_dsn):
            console.print("created database")
        return await migrate(settings.pg_dsn)

    applied = asyncio.run(run())
    console.print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")
    return 0


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from kernel.auth import mint_token

    if not settings.local:
        console.print(
            "[red]tally token mints tokens with the shared secret: local runs only"
            " (TALLY_ENV=local); elsewhere, tokens come from your identity provider"
        )
        return 2
    ttl = args.ttl or settings.token_ttl_seconds
    print(
        mint_token(
            args.user,
            settings.jwt_secret,
            ttl,
            settings.jwt_algorithm,
            settings.jwt_issuer,
            settings.jwt_audience,
        )
    )
    return 0


def _metrics_dir(settings: Settings, service: str, port: int) -> None:
    """Give a multi-worker service one shared Prometheus directory, emptied at start, served on
    ``port`` by this (the parent) process: every worker's samples, off the public API port."""
    path = settings.data_path / "metrics" / service
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)  # before prometheus_client is imported
    if port:
        from prometheus_client import CollectorRegistry, multiprocess, start_http_server

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        try:
            start_http_server(port, addr=settings.metrics_host, registry=registry)
        except OSError as exc:
            console.print(f"[yellow]metrics port {port} unavailable: {exc}")


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from kernel.logging import configure_logging

    if args.service == "web":
        configure_logging(args.service, settings.log_format, settings.log_level)
        port = args.port or settings.web_port
        uvicorn.run(
            "tally.serving:web_page",
            factory=True,
            host=settings.web_host,
            port=port,
            log_level="warning",
            access_log=False,
        )
        return 0
    if args.service == "command-api":
        workers = args.workers or settings.command_api_workers
        host, port = settings.command_api_host, args.port or settings.command_api_port
        metrics_port = settings.command_api_metrics_port
        target = "tally.serving:command_api"
    else:
        workers = args.workers or settings.query_api_workers
        host, port = settings.query_api_host, args.port or settings.query_api_port
        metrics_port = settings.query_api_metrics_port
        target = "tally.serving:query_api"
    _metrics_dir(settings, args.service, metrics_port)
    from tally.bootstrap import check_auth_settings

    check_auth_settings(settings)  # before any worker starts: one clear line, exit 2
    configure_logging(args.service, settings.log_format, settings.log_level)
    uvicorn.run(
        target,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,  # open live streams must not hold a shutdown forever
        loop="uvloop",
        http="tally.http_limits:LimitedHttpToolsProtocol",  # httptools, with head limits
        limit_concurrency=settings.http_max_requests or None,
        proxy_headers=False,  # kernel.client_address reads X-Forwarded-For, from trusted proxies
    )
    return 0


SERVICES = ["command-api", "query-api", "web"]


def run_processes(settings: Settings, projectors: int) -> list[tuple[list[str], dict[str, str]]]:
    """What `tally run` starts, each as its own process with its own variables: the services,
    the relay and ``projectors`` projector processes (each on a metrics port of its own, with a
    stable consumer-group member name, so a restarted one takes its partitions back at once)."""
    processes: list[tuple[list[str], dict[str, str]]] = [
        (["serve", "command-api"], {}),
        (["serve", "query-api"], {}),
        (["serve", "web"], {}),
        (["relay"], {}),
    ]
    for n in range(projectors):
        own = {
            "TALLY_PROJECTOR_METRICS_PORT": str(settings.projector_metrics_port + n),
            "TALLY_PROJECTOR_INSTANCE": settings.projector_instance or f"run-{n + 1}",
        }
        processes.append((["project", "all"], own))
    return processes


def _run(args: argparse.Namespace, settings: Settings) -> int:
    """Everything, in the foreground: stack, migrations, then every service until Ctrl-C.

    Supervised: a process that exits is restarted (with backoff) while the others keep serving.
    """
    from tally import stack
    from tally.bootstrap import PROJECTIONS
    from tally.processes import spawn
    from tally.processes import stop as stop_process
    from tally.status import service_urls
    from tally.supervisor import Supervisor, system_ready

    stack.stack_up(settings, console.print)
    _migrate(settings)
    supervisor = Supervisor(run_processes(settings, args.projectors), spawn, console.print)
    supervisor.start()
    command, query, relay, _ = service_urls(settings)
    host = settings.metrics_host.replace("0.0.0.0", "127.0.0.1")
    projectors = [
        f"http://{host}:{settings.projector_metrics_port + n}/metrics"
        for n in range(args.projectors)
    ]
    probes = (command, query, relay, projectors, list(PROJECTIONS))
    console.print("starting; waiting until every process is ready...")
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    ready = False
    while not stopping:
        supervisor.tend()
        if not ready and system_ready(*probes):
            ready = True
            console.print(
                f"[green]ready:[/green] the web page on http://127.0.0.1:{settings.web_port},"
                f" command API on {command}, query API on {query}"
                " (OpenAPI at /schema on each). Get a token with: tally token --user alice."
                " Ctrl-C stops."
            )
        time.sleep(0.5)
    supervisor.stop(stop_process)
    console.print("services stopped; the stack keeps running (tally stack down stops it)")
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 when everything is healthy, 1 otherwise (so scripts and probes can use it)."""
    from rich.live import Live

    from tally.status import collect, render

    if args.json or not args.watch:
        facts = collect(settings)
        if args.json:
            print(msgspec.json.encode(facts).decode())
        else:
            Console().print(render(facts))
        return 0 if facts["healthy"] else 1
    with Live(render(collect(settings)), refresh_per_second=1, screen=False) as live:
        try:
            while True:
                time.sleep(2)
                live.update(render(collect(settings)))
        except KeyboardInterrupt:
            return 0


async def _events(args: argparse.Namespace, settings: Settings) -> int:
    """Print one comment's events from the log, oldest first."""
    from event_store.postgres import PostgresEventStore
    from tally import bootstrap

    async with bootstrap.open_pool(settings, "events", fail_fast=True) as pool:
        history = (await PostgresEventStore(pool).read_comments([args.comment]))[args.comment]
    if not history:
        console.print(f"[red]no events for comment {args.comment}")
        return 1
    if args.json:
        for envelope in history:
            print(msgspec.json.encode(envelope).decode())
        return 0
    table = Table("position", "at", "type", "by", "details", title=f"comment {args.comment}")
    for envelope in history:
        event = msgspec.structs.asdict(envelope.event)
        user = str(event.pop("user_id", event.pop("author_id", "")))
        event.pop("comment_id", None)
        details = ", ".join(f"{k}={v}" for k, v in event.items() if v is not None)
        table.add_row(
            str(envelope.position),
            envelope.occurred_at.isoformat(timespec="seconds"),
            type(envelope.event).__name__,
            user,
            details,
        )
    Console().print(table)
    return 0


def _seed(args: argparse.Namespace, settings: Settings) -> int:
    from event_store.seed import SeedPlan, seed

    plan = SeedPlan(
        events=args.events,
        commentables=args.commentables,
        comments=args.comments,
        users=args.users,
        days=args.days,
        seed=args.seed,
    )
    started = time.monotonic()
    first, last = asyncio.run(
        seed(
            settings.pg_dsn,
            plan,
            outbox=not args.no_outbox,
            progress=lambda n: console.print(f"{n:,} events written"),
        )
    )
    took = time.monotonic() - started
    console.print(
        f"seeded positions {first:,}..{last:,} ({last - first + 1:,} events) in {took:.1f} s"
    )
    return 0


def _backend(args: argparse.Namespace, settings: Settings) -> int:
    import uvloop

    from kernel.logging import configure_logging
    from kernel.runtime import tune_gc
    from kernel.tracing import configure_tracing
    from tally import bootstrap

    configure_logging(args.command, settings.log_format, settings.log_level)
    configure_tracing(settings, "projector" if args.command == "project" else args.command)
    tune_gc()
    if args.command == "relay":
        uvloop.run(bootstrap.run_relay(settings))
    elif args.command == "project":
        names = (
            list(bootstrap.PROJECTIONS) if "all" in args.names else list(dict.fromkeys(args.names))
        )
        uvloop.run(bootstrap.run_projectors(settings, names))
    elif args.command == "verify":
        return uvloop.run(_verify(args, settings))
    elif args.command == "replay":
        return uvloop.run(_replay(args, settings))
    elif args.command == "events":
        return uvloop.run(_events(args, settings))
    else:
        return uvloop.run(_dlq(args, settings))
    return 0


async def _verify(args: argparse.Namespace, settings: Settings) -> int:
    from event_store.postgres import PostgresEventStore
    from projectors.progress import ProgressBoard
    from projectors.verify import verify
    from tally import bootstrap

    names = list(bootstrap.PROJECTIONS) if args.projection == "all" else [args.projection]
    async with (
        bootstrap.open_stores(settings, es_timeout=60) as (redis, es),
        bootstrap.open_pool(settings, "verify", fail_fast=True) as pool,
    ):
        projections = bootstrap.build_projections(settings, names, redis, es)
        head, reports = await verify(
            PostgresEventStore(pool),
            projections,
            ProgressBoard(redis, settings.kafka_group_prefix).low_water,
            wait_seconds=args.wait,
        )
    table = Table("projection", "comments checked", "mismatches", title=f"head {head}")
    for report in reports:
        state = "[green]0" if report.ok else f"[red]{len(report.mismatches)}"
        table.add_row(report.projection, str(report.checked), state)
    Console().print(table)
    wrong = [m for r in reports for m in r.mismatches]
    for line in wrong[: args.show]:
        print(line)
    return 1 if wrong else 0


async def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from projectors.replay import ReplayRunning, replay
    from tally import bootstrap

    names = list(bootstrap.PROJECTIONS) if args.projection == "all" else [args.projection]
    async with bootstrap.open_rebuilds(settings, names) as rebuilds:
        for rebuild in rebuilds:
            try:
                with ReplayProgress(rebuild.name) as show:
                    result = await replay(
                        settings.pg_dsn,
                        rebuild,
                        keep=args.keep,
                        batch_size=args.batch_size,
                        on_progress=show,
                    )
            except ReplayRunning as exc:
                console.print(f"[red]{exc}[/red]")
                return 1
            rate = result.events / max(result.seconds, 1e-9)
            old = (
                "nothing was live before"
                if result.replaced == result.target
                else f"{result.replaced} {'kept' if args.keep else 'dropped'}"
            )
            console.print(
                f"{result.projection}: {result.events:,} events into {result.target}"
                f" in {result.seconds:.1f} s ({rate:,.0f}/s), live now; {old}"
                f" ({result.total_seconds:.1f} s in all)"
            )
    return 0


class ReplayProgress:
    """A progress bar on a terminal; a line every few seconds otherwise (logs, CI)."""

    def __init__(self, name: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._name = name
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>10} events/s"),
            TimeRemainingColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        self._task = self._bar.add_task(f"replay {name}", total=None, rate="-")
        self._printed = 0.0
        self._announced = False

    def __enter__(self) -> ReplayProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def __call__(self, progress: Progress) -> None:
        if not self._announced:
            self._announced = True
            start = progress.resumed_from
            how = f"resuming at position {start:,}" if start else "from position 0"
            console.print(f"replay {self._name} into {progress.target}: {how}")
        self._bar.update(
            self._task,
            completed=progress.done,
            total=progress.total,
            rate=f"{progress.rate:,.0f}",
        )
        if not console.is_terminal and time.monotonic() - self._printed > 2:
            self._printed = time.monotonic()
            console.print(
                f"replay {self._name}: {progress.done:,}/{progress.total:,} events,"
                f" position {progress.position:,}, {progress.rate:,.0f} events/s"
            )


async def _dlq(args: argparse.Namespace, settings: Settings) -> int:
    from projectors import parking
    from projectors.fence import SwitchFence
    from tally import bootstrap

    async with bootstrap.open_pool(settings, "dlq", fail_fast=True) as pool:
        if args.action in ("show", "skip"):
            if args.position is None or args.projection is None:
                console.print(f"[red]dlq {args.action} needs --projection and --position")
                return 2
            if args.action == "skip":
                skipped = await parking.skip(pool, args.projection, args.position)
                if not skipped:
                    console.print(f"[red]{args.projection} has no parked event {args.position}")
                    return 1
                console.print(
                    f"{args.projection}: skipped event {args.position}; events held behind it"
                    " are applied by the live projector. The read model now lacks this event"
                    " until a replay (tally verify shows it)."
                )
                return 0
            found = await parking.show(pool, args.projection, args.position)
            if found is None:
                console.print(f"[red]{args.projection} has no parked event {args.position}")
                return 1
            print(msgspec.json.encode(found).decode())
            return 0
        if args.action == "list":
            table = Table("projection", "position", "comment", "error", "parked at")
            for name, position, comment, error, at in await parking.list_parked(
                pool, args.projection
            ):
                table.add_row(name, str(position), comment, error, str(at))
            Console().print(table)
            return 0
        names = [args.projection] if args.projection else list(bootstrap.PROJECTIONS)
        async with bootstrap.open_projections(settings, names) as projections:
            still = 0
            for projection in projections:
                await projection.setup()
                # Like a live batch: never applied half before, half after a replay's switch.
                fence = SwitchFence(settings.pg_dsn, projection.name)
                try:
                    async with fence.shared():
                        applied, left = await parking.retry(pool, projection)
                finally:
                    await fence.close()
                console.print(f"{projection.name}: {applied} applied, {left} still parked")
                still += left
        return 1 if still else 0


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    details: str,
    examples: list[str],
) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` explains it and shows how it is used."""
    return sub.add_parser(
        name,
        help=summary,
        description=f"{summary[0].upper()}{summary[1:]}.\n\n{details}",
        epilog="examples:\n" + "\n".join(f"  {line}" for line in examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``tally`` command line: every subcommand with a description and examples."""
    parser = argparse.ArgumentParser(
        prog="tally",
        description=__doc__,
        epilog="Settings come from TALLY_* variables (docs/operations.md); "
        "`tally <command> --help` explains each command.",
    )
    parser.add_argument("--version", action="version", version=f"tally {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    st = _command(
        sub,
        "stack",
        "start, stop or inspect the local stack",
        "PostgreSQL and Redis from Debian's packages, Apache Kafka and OpenSearch from Maven\n"
        "Central jars (Java and Maven installed when missing), under the data directory.\n"
        "`status` exits 1 when a server is down; `reset` stops them and deletes their data.",
        ["tally stack up", "tally stack status", "TALLY_DATA_DIR=.tally/test tally stack reset"],
    )
    st.add_argument("action", choices=["up", "down", "status", "reset"])
    st.add_argument("--data-dir", help="data directory (default: TALLY_DATA_DIR or .tally/run)")
    _command(
        sub,
        "migrate",
        "create the database and apply pending migrations",
        "Idempotent: applied migrations are recorded and skipped.",
        ["tally migrate"],
    )
    tk = _command(
        sub,
        "token",
        "mint a JWT for a local user",
        "Signed with TALLY_JWT_SECRET; for local runs, tests and benchmarks.",
        ["tally token --user alice", "tally token --user bob --ttl 60"],
    )
    tk.add_argument("--user", required=True)
    tk.add_argument("--ttl", type=int, help="seconds until it expires")
    sv = _command(
        sub,
        "serve",
        "run one service in the foreground",
        "The command API (:8000), the query API (:8001) or the reference web page (:8002).",
        ["tally serve command-api --workers 2", "tally serve query-api --port 9001"],
    )
    sv.add_argument("service", choices=SERVICES)
    sv.add_argument("--workers", type=int)
    sv.add_argument("--port", type=int)
    rn = _command(
        sub,
        "run",
        "stack up, migrate and run every service until Ctrl-C",
        "Supervised: a process that exits is restarted with backoff while the others serve.\n"
        "`ready:` is printed once every process answers and every partition of the topic is\n"
        "read by a projector that has caught up.",
        ["tally run", "tally run --projectors 2"],
    )
    rn.add_argument(
        "--projectors", type=int, default=1, help="projector processes to share the partitions"
    )
    _command(
        sub,
        "relay",
        "publish the outbox to Kafka (one leader, others stand by)",
        "Run two for failover: the standby takes over when the leader's lease lapses.",
        ["tally relay"],
    )
    pj = _command(
        sub,
        "project",
        "run projections from Kafka",
        "Keeps the Redis scores and rankings and the Elasticsearch indices up to date.\n"
        "Run up to the partition count of each; each process on its own metrics port.",
        ["tally project all", "TALLY_PROJECTOR_METRICS_PORT=9103 tally project comments votes"],
    )
    pj.add_argument("names", nargs="+", choices=["all", "redis", "comments", "votes"])
    sd = _command(
        sub,
        "seed",
        "write a realistic history fast (COPY), for demos and benchmarks",
        "Valid histories (posts, votes, changes, retractions, edits, deletes) by seed.",
        ["tally seed --events 1000000 --comments 50000", "tally seed --no-outbox"],
    )
    sd.add_argument("--events", type=int, default=20_000)
    sd.add_argument("--commentables", type=int, default=20)
    sd.add_argument("--comments", type=int, default=1_000)
    sd.add_argument("--users", type=int, default=5_000)
    sd.add_argument("--days", type=int, default=7)
    sd.add_argument("--seed", type=int, default=1)
    sd.add_argument("--no-outbox", action="store_true", help="do not queue the events for Kafka")
    stt = _command(
        sub,
        "status",
        "one screen: stack health, backlog, projection lag",
        "Probes the configured API and metrics addresses. Exits 0 when healthy: every\n"
        "process up, the event store reachable, every projection started, nothing parked\n"
        "and nothing rebuilding; otherwise 1, with the problems listed.",
        ["tally status", "tally status --json | jq .problems", "tally status --watch"],
    )
    stt.add_argument("--watch", action="store_true", help="refresh every 2 s until Ctrl-C")
    stt.add_argument("--json", action="store_true", help="print the facts as one JSON object")
    vf = _command(
        sub,
        "verify",
        "prove the read models equal a fold of the event store",
        "Waits for the projections to reach the head, then compares every comment.\n"
        "Exits 1 when anything differs.",
        ["tally verify", "tally verify --projection redis --show 50"],
    )
    vf.add_argument("--projection", choices=["all", "redis", "comments", "votes"], default="all")
    vf.add_argument("--show", type=int, default=20, help="how many mismatches to print")
    vf.add_argument(
        "--wait", type=float, default=30, help="seconds to wait for the projections to catch up"
    )
    rp = _command(
        sub,
        "replay",
        "rebuild projections from the event store beside the live ones, then switch",
        "Reads stay served from the live generation until the switch; progress is printed.",
        ["tally replay", "tally replay --projection comments --keep"],
    )
    rp.add_argument("--projection", choices=["all", "redis", "comments", "votes"], default="all")
    rp.add_argument("--keep", action="store_true", help="keep the old generation or index")
    rp.add_argument(
        "--batch-size", type=int, help="events per batch (default 200,000 Redis, 2,000 ES)"
    )
    dq = _command(
        sub,
        "dlq",
        "inspect, retry or skip parked events",
        "list: parked events, oldest first. show: one, with its event from the log (JSON).\n"
        "retry: apply them again, in order. skip: drop one for good (the read model lacks\n"
        "it until a replay); what was held behind it goes on.",
        [
            "tally dlq list",
            "tally dlq show --projection redis --position 1042",
            "tally dlq retry --projection votes",
            "tally dlq skip --projection redis --position 1042",
        ],
    )
    dq.add_argument("action", choices=["list", "show", "retry", "skip"])
    dq.add_argument("--projection", choices=["redis", "comments", "votes"])
    dq.add_argument("--position", type=int, help="the parked event (show, skip)")
    bk = _command(
        sub,
        "backup",
        "back up the local stack's PostgreSQL with pgBackRest, or list the backups",
        "The event log is the source of truth, so it is what is backed up. The first backup\n"
        "configures pgBackRest and, from then on, every WAL segment is archived, so\n"
        "`tally restore --time` can reach any moment after it. Two full backups are kept.",
        ["tally backup", "tally backup --type incr", "tally backup --list --json"],
    )
    bk.add_argument("--type", choices=["full", "diff", "incr"], default="full")
    bk.add_argument("--list", action="store_true", help="only list the backups")
    bk.add_argument("--json", action="store_true", help="the list as JSON (pgBackRest's)")
    rs = _command(
        sub,
        "restore",
        "restore the latest backup into a new data directory and start a server on it",
        "Archived WAL is replayed to the end, or to --time (point-in-time restore). The live\n"
        "server is left alone: point TALLY_PG_DSN at the printed DSN, then `tally replay` and\n"
        "`tally verify` rebuild and check every read model from the restored log.",
        [
            "tally restore --to /var/lib/postgresql/drill --port 25433",
            "tally restore --to /var/lib/postgresql/drill --port 25433 "
            "--time '2026-11-26 23:10:00+00'",
            "tally restore --to /var/lib/postgresql/drill --stop",
        ],
    )
    rs.add_argument("--to", required=True, help="a new, empty directory for the data")
    rs.add_argument("--port", type=int, default=25433, help="the restored server's port")
    rs.add_argument("--time", help="recover up to this moment (a timestamp with a time zone)")
    rs.add_argument("--stop", action="store_true", help="stop the server restored into --to")
    ev = _command(
        sub,
        "events",
        "print one comment's events from the log",
        "Oldest first: what happened to it, by whom and when (the source of truth).",
        ["tally events --comment 01J9Z3K2XQ...", "tally events --comment ID --json"],
    )
    ev.add_argument("--comment", required=True, help="the comment's id")
    ev.add_argument("--json", action="store_true", help="one JSON envelope per line")
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tally")
    except PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tally`` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except SettingsError as exc:
        console.print(f"[red]configuration error:[/red] {exc}", soft_wrap=True)
        return 2
    try:
        return _dispatch(args, settings)
    except SettingsError as exc:
        console.print(f"[red]configuration error:[/red] {exc}", soft_wrap=True)
        return 2
    except Exception as exc:
        from tally.stack import StackError

        if isinstance(exc, StackError):
            console.print(f"[red]stack error:[/red] {exc}")
            return 1
        unreachable = _unreachable(exc, settings)
        if unreachable:
            # One line an operator can act on, not a traceback.
            console.print(f"[red]cannot reach {unreachable}[/red]", soft_wrap=True)
            return 1
        raise


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "stack":
        return _stack(args, settings)
    if args.command == "migrate":
        return _migrate(settings)
    if args.command == "backup":
        return _backup(args, settings)
    if args.command == "restore":
        return _restore(args, settings)
    if args.command == "token":
        return _token(args, settings)
    if args.command == "serve":
        return _serve(args, settings)
    if args.command == "status":
        return _status(args, settings)
    if args.command == "seed":
        return _seed(args, settings)
    if args.command in ("relay", "project", "dlq", "verify", "replay", "events"):
        return _backend(args, settings)
    return _run(args, settings)


def _unreachable(exc: BaseException, settings: Settings) -> str | None:
    """Which store an exception says is unreachable (with its address), if any."""
    import psycopg
    from aiokafka.errors import KafkaConnectionError
    from elastic_transport import ConnectionError as EsConnectionError
    from elasticsearch import AuthenticationException, AuthorizationException
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisClusterException
    from redis.exceptions import TimeoutError as RedisTimeoutError

    seen: BaseException | None = exc
    while seen is not None:
        reason = str(seen).splitlines()[0] if str(seen) else type(seen).__name__
        if isinstance(seen, psycopg.OperationalError):
            return f"PostgreSQL at {_address(settings.pg_dsn)}: {reason}"
        if isinstance(seen, RedisConnectionError | RedisTimeoutError | RedisClusterException):
            return f"Redis at {_address(settings.redis_url)}: {reason}"
        if isinstance(seen, EsConnectionError):
            # Its own message is generic ("TLS error"); the cause says which.
            cause = seen.__cause__ or seen.__context__
            detail = str(cause).splitlines()[0] if cause and str(cause) else reason
            return f"Elasticsearch at {settings.es_url}: {detail}"
        if isinstance(seen, AuthenticationException | AuthorizationException):
            return f"Elasticsearch at {settings.es_url}: credentials refused (TALLY_ES_API_KEY)"
        if isinstance(seen, KafkaConnectionError):
            return f"Kafka at {settings.kafka_bootstrap}: {reason}"
        seen = seen.__cause__ or seen.__context__
    return None


def _address(url: str) -> str:
    """A URL's host and port, without credentials."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.hostname else url


if __name__ == "__main__":
    sys.exit(main())
