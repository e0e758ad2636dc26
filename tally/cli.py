"""The ``tally`` command: one entry point for every process and operator task."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import time
from typing import TYPE_CHECKING

import msgspec
from rich.console import Console
from rich.table import Table

from kernel.settings import Settings, SettingsError, get_settings

if TYPE_CHECKING:
    from projectors.replay import Progress

console = Console(stderr=True)


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
        http="httptools",
    )
    return 0


SERVICES = ["command-api", "query-api", "web"]
# What `tally run` starts, each as its own process.
RUN_PROCESSES = [
    ["serve", "command-api"],
    ["serve", "query-api"],
    ["serve", "web"],
    ["relay"],
    ["project", "all"],
]


def _run(settings: Settings) -> int:
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
    supervisor = Supervisor(RUN_PROCESSES, spawn, console.print)
    supervisor.start()
    command, query, relay, projectors = service_urls(settings)
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
    from rich.live import Live

    from tally.status import render

    if not args.watch:
        Console().print(render(settings))
        return 0
    with Live(render(settings), refresh_per_second=1, screen=False) as live:
        try:
            while True:
                time.sleep(2)
                live.update(render(settings))
        except KeyboardInterrupt:
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
    from kernel.tracing import configure_tracing
    from tally import bootstrap

    configure_logging(args.command, settings.log_format, settings.log_level)
    configure_tracing(settings, "projector" if args.command == "project" else args.command)
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
        bootstrap.open_pool(settings, "verify") as pool,
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
            console.print(
                f"{result.projection}: {result.events:,} events into {result.target}"
                f" in {result.seconds:.1f} s ({rate:,.0f}/s), live now;"
                f" {result.replaced} {'kept' if args.keep else 'dropped'}"
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

    async with bootstrap.open_pool(settings, "dlq") as pool:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tally", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser("stack", help="start, stop or inspect the local stack")
    st.add_argument("action", choices=["up", "down", "status", "reset"])
    st.add_argument("--data-dir", help="data directory (default: TALLY_DATA_DIR or .tally/run)")
    sub.add_parser("migrate", help="create the database and apply pending migrations")
    tk = sub.add_parser("token", help="mint a JWT for a local user")
    tk.add_argument("--user", required=True)
    tk.add_argument("--ttl", type=int, help="seconds until it expires")
    sv = sub.add_parser("serve", help="run one service in the foreground")
    sv.add_argument("service", choices=SERVICES)
    sv.add_argument("--workers", type=int)
    sv.add_argument("--port", type=int)
    sub.add_parser("run", help="stack up, migrate and run every service until Ctrl-C")
    sub.add_parser("relay", help="publish the outbox to Kafka (one leader, others stand by)")
    pj = sub.add_parser("project", help="run projections from Kafka")
    pj.add_argument("names", nargs="+", choices=["all", "redis", "comments", "votes"])
    sd = sub.add_parser(
        "seed", help="write a realistic history fast (COPY), for demos and benchmarks"
    )
    sd.add_argument("--events", type=int, default=20_000)
    sd.add_argument("--commentables", type=int, default=20)
    sd.add_argument("--comments", type=int, default=1_000)
    sd.add_argument("--users", type=int, default=5_000)
    sd.add_argument("--days", type=int, default=7)
    sd.add_argument("--seed", type=int, default=1)
    sd.add_argument("--no-outbox", action="store_true", help="do not queue the events for Kafka")
    stt = sub.add_parser("status", help="one screen: stack health, backlog, projection lag")
    stt.add_argument("--watch", action="store_true", help="refresh every 2 s until Ctrl-C")
    vf = sub.add_parser("verify", help="prove the read models equal a fold of the event store")
    vf.add_argument("--projection", choices=["all", "redis", "comments", "votes"], default="all")
    vf.add_argument("--show", type=int, default=20, help="how many mismatches to print")
    vf.add_argument(
        "--wait", type=float, default=30, help="seconds to wait for the projections to catch up"
    )
    rp = sub.add_parser(
        "replay", help="rebuild projections from the event store beside the live ones, then switch"
    )
    rp.add_argument("--projection", choices=["all", "redis", "comments", "votes"], default="all")
    rp.add_argument("--keep", action="store_true", help="keep the old generation or index")
    rp.add_argument(
        "--batch-size", type=int, help="events per batch (default 100,000 Redis, 2,000 ES)"
    )
    dq = sub.add_parser("dlq", help="inspect or retry parked events")
    dq.add_argument("action", choices=["list", "retry"])
    dq.add_argument("--projection", choices=["redis", "comments", "votes"])
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tally`` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
        if args.command == "stack":
            return _stack(args, settings)
        if args.command == "migrate":
            return _migrate(settings)
        if args.command == "token":
            return _token(args, settings)
        if args.command == "serve":
            return _serve(args, settings)
        if args.command == "status":
            return _status(args, settings)
        if args.command == "seed":
            return _seed(args, settings)
        if args.command in ("relay", "project", "dlq", "verify", "replay"):
            return _backend(args, settings)
        return _run(settings)
    except SettingsError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        return 2
    except Exception as exc:
        from tally.stack import StackError

        if isinstance(exc, StackError):
            console.print(f"[red]stack error:[/red] {exc}")
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
