"""The composition root: every process's object graph, built from the settings in one place.

The APIs get their services (pools, clients, the write path) from here; the relay and the
projectors get narrow configs and the clients they use. Each long-running process runs until
SIGTERM or SIGINT, serves Prometheus metrics on its own port, and owns the clients it opens.
Nothing imports this module but the entry points (``tally.cli``, ``tally.serving``, ``bench``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import structlog
from elasticsearch import AsyncElasticsearch
from litestar import Litestar
from prometheus_client import start_http_server
from psycopg_pool import AsyncConnectionPool

from command_api.answered_head import HeadRecorder, recording_head
from command_api.app import CommandApiConfig
from command_api.app import create_app as create_command_app
from command_api.executor import CommandExecutor
from command_api.group_commit import GroupCommitter, Submit, with_deadline
from command_api.idempotency import delete_expired_keys
from command_api.rate_limit import RateLimiter
from command_api.services import CommandServices
from command_api.work import Outcome, WorkItem
from event_store.postgres import PostgresEventStore, connection_options
from event_store.relay import OutboxRelay, RelayConfig
from kernel.auth import MIN_SECRET_BYTES, AuthConfig, TokenVerifier, auth_config_problems
from kernel.limit_tiers import global_tier, per_address, per_endpoint
from kernel.limits import Limit
from kernel.redis_client import AnyRedis
from kernel.settings import Settings, SettingsError, get_settings
from kernel.web_contract import parse_origins
from projectors.base import Projection
from projectors.es_comments import EsCommentsProjection
from projectors.es_indices import COMMENTS_INDEX, VOTES_INDEX
from projectors.es_votes import EsVotesProjection
from projectors.es_votes_retention import VotesRetention
from projectors.fence import SwitchFence
from projectors.progress import ProgressBoard
from projectors.rebuilder import Rebuilder
from projectors.rebuilds import IndexRebuild, Rebuild, RedisGenerationRebuild
from projectors.reconciler import Reconciler, ReconcilerConfig
from projectors.redis_keys import progress_channel
from projectors.redis_scores import RedisScoresProjection
from projectors.runner import ProjectorRunner, RunnerConfig
from query_api.app import QueryApiConfig, QueryServices
from query_api.app import create_app as create_query_app
from query_api.cursors import CursorSigner, cursor_key
from query_api.es_reads import EsReads
from query_api.live_hub import LiveHub
from query_api.redis_reads import RedisReads
from tally.clients import elasticsearch, kafka_access, redis_client, redis_subscriber

log = structlog.get_logger(__name__)

PROJECTIONS = ("redis", "comments", "votes")
# Back-end statements read and write in bulk (heals read whole ranges): bounded, but generously.
BACKEND_STATEMENT_MS = 120_000
# A Lua call over a big batch takes a while, but a Redis that says nothing for this long is
# stalled: the call fails and is retried.
BACKEND_REDIS_TIMEOUT = 10.0


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def serve_metrics(port: int, host: str, variable: str) -> None:
    """Expose /metrics on ``port`` (0 turns it off); a taken port is logged, not fatal.

    The log names ``variable``: two projector processes on one host need a port each.
    """
    if not port:
        return
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log.error(
            "metrics_port_unavailable",
            port=port,
            error=str(exc),
            fix=f"give each process on this host its own {variable}",
        )


@contextlib.asynccontextmanager
async def open_pool(
    settings: Settings, name: str, fail_fast: bool = False
) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """A small autocommit pool on the event store.

    ``fail_fast`` (one-shot commands): connect once first, so an unreachable server raises
    ``psycopg.OperationalError`` at once instead of the pool retrying for 30 s.
    """
    if fail_fast:
        probe = await psycopg.AsyncConnection.connect(
            settings.pg_dsn, connect_timeout=max(1, round(settings.pg_connect_timeout_seconds))
        )
        await probe.close()
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        settings.pg_dsn,
        min_size=1,
        max_size=4,
        open=False,
        name=name,
        timeout=30,
        kwargs=connection_options(settings.pg_connect_timeout_seconds, BACKEND_STATEMENT_MS),
    )
    await pool.open()
    try:
        yield pool
    finally:
        await pool.close()


async def run_relay(settings: Settings) -> None:
    """``tally relay``."""
    stop = stop_on_signals()
    serve_metrics(settings.relay_metrics_port, settings.metrics_host, "TALLY_RELAY_METRICS_PORT")
    async with open_pool(settings, "relay") as pool:
        await OutboxRelay(relay_config(settings), pool).run(stop)


def relay_config(settings: Settings) -> RelayConfig:
    """The relay's part of the settings."""
    return RelayConfig(
        kafka=kafka_access(settings),
        topic=settings.kafka_topic,
        partitions=settings.kafka_partitions,
        idempotent_producer=settings.kafka_idempotent_producer,
        batch_size=settings.relay_batch_size,
        poll_interval_ms=settings.relay_poll_interval_ms,
        lease_seconds=settings.relay_lease_seconds,
        watermark_interval_ms=settings.relay_watermark_interval_ms,
        kafka_timeout_ms=settings.kafka_timeout_ms,
    )


def runner_config(settings: Settings) -> RunnerConfig:
    """A projector runner's part of the settings."""
    return RunnerConfig(
        kafka=kafka_access(settings),
        topic=settings.kafka_topic,
        dlq_topic=settings.kafka_dlq_topic,
        group_prefix=settings.kafka_group_prefix,
        partitions=settings.kafka_partitions,
        batch_size=settings.projector_batch_size,
        kafka_timeout_ms=settings.kafka_timeout_ms,
        instance=settings.projector_instance,
        session_timeout_ms=settings.kafka_session_timeout_ms,
    )


def reconciler_config(settings: Settings) -> ReconcilerConfig:
    """The reconciler's part of the settings."""
    return ReconcilerConfig(
        interval_seconds=settings.reconcile_interval_seconds,
        recent_limit=settings.reconcile_recent_limit,
        sweep_batch=settings.reconcile_sweep_batch,
    )


@contextlib.asynccontextmanager
async def open_stores(
    settings: Settings, es_timeout: float
) -> AsyncIterator[tuple[AnyRedis, AsyncElasticsearch]]:
    """Clients of the read-model stores, closed afterwards; every call has a deadline."""
    redis = redis_client(
        settings,
        socket_timeout=BACKEND_REDIS_TIMEOUT,
        socket_connect_timeout=2,
        health_check_interval=10,
        max_connections=64,
    )
    es = elasticsearch(settings, request_timeout=es_timeout, retry_on_timeout=False, max_retries=0)
    try:
        yield redis, es
    finally:
        await redis.aclose()
        await es.close()


@contextlib.asynccontextmanager
async def open_projections(settings: Settings, names: list[str]) -> AsyncIterator[list[Projection]]:
    """Build the named projections with their clients; close the clients afterwards."""
    async with open_stores(settings, es_timeout=30) as (redis, es):
        yield build_projections(settings, names, redis, es)


def rebuild_of(
    settings: Settings, name: str, redis: AnyRedis, es: AsyncElasticsearch
) -> Rebuild[Any]:
    """The rebuild of one projection, on the given clients."""
    if name == "redis":
        return RedisGenerationRebuild(redis, settings.redis_generation)
    if name == "comments":
        return IndexRebuild(
            "comments",
            es,
            settings.es_comments_alias,
            COMMENTS_INDEX,
            lambda index: EsCommentsProjection(es, index),
        )
    return IndexRebuild(
        "votes",
        es,
        settings.es_votes_alias,
        VOTES_INDEX,
        lambda index: EsVotesProjection(es, index, retention_days=settings.votes_retention_days),
    )


@contextlib.asynccontextmanager
async def open_rebuilds(settings: Settings, names: list[str]) -> AsyncIterator[list[Rebuild[Any]]]:
    """Rebuild targets for the named projections, with their clients."""
    async with open_stores(settings, es_timeout=60) as (redis, es):
        yield [rebuild_of(settings, name, redis, es) for name in names]


async def run_projectors(settings: Settings, names: list[str]) -> None:
    """``tally project NAME...``: per projection a runner, a reconciler and a rebuilder.

    A bug in any of them stops the process (loudly, non-zero): ``tally run`` or the
    orchestrator restarts it. Outages of the stores are waited out inside.
    """
    stop = stop_on_signals()
    serve_metrics(
        settings.projector_metrics_port, settings.metrics_host, "TALLY_PROJECTOR_METRICS_PORT"
    )
    async with (
        open_pool(settings, "projectors") as pool,
        open_stores(settings, es_timeout=30) as (redis, es),
    ):
        store = PostgresEventStore(pool)
        progress = ProgressBoard(redis, settings.kafka_group_prefix)
        tasks = []
        rebuilders = []
        for projection in build_projections(settings, names, redis, es):
            name = projection.name
            rebuilder = Rebuilder(
                name, settings.pg_dsn, functools.partial(rebuild_of, settings, name, redis, es)
            )
            rebuilders.append(rebuilder)
            runner = projector_runner(
                settings, projection, pool, rebuilder.trigger, progress.publish
            )
            reconciler = Reconciler(
                projection,
                store,
                SwitchFence(settings.pg_dsn, name),
                functools.partial(getattr, runner, "applied_low_water"),
                reconciler_config(settings),
            )
            tasks += [runner.run(stop), reconciler.run(stop)]
            if name == "votes" and settings.votes_retention_days > 0:
                retention = VotesRetention(
                    es, settings.es_votes_alias, settings.votes_retention_days
                )
                tasks.append(retention.run(stop))
        try:
            await _until_one_fails(tasks, stop)
        finally:
            for rebuilder in rebuilders:
                await rebuilder.close()


def projector_runner(
    settings: Settings,
    projection: Projection,
    pool: AsyncConnectionPool[Any],
    on_lost: Callable[[], Awaitable[None]] | None = None,
    on_progress: Callable[[str, int], Awaitable[None]] | None = None,
) -> ProjectorRunner:
    """A runner feeding ``projection`` from the events topic."""
    return ProjectorRunner(
        projection,
        runner_config(settings),
        pool,
        PostgresEventStore(pool),
        SwitchFence(settings.pg_dsn, projection.name),
        on_lost,
        on_progress,
    )


class JobEnded(RuntimeError):
    """A job that runs until the process stops ended before that."""


async def _until_one_fails(jobs: list[Any], stop: asyncio.Event) -> None:
    """Run ``jobs`` until ``stop``; the first that fails, or ends early in any way (returned,
    cancelled from within), stops the others and is raised: a process missing one of its jobs
    must not go on as if it were whole."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    failure: BaseException | None = None
    if not stop.is_set():
        ended = next(iter(done))
        if ended.cancelled():
            failure = JobEnded(f"{ended.get_coro()!r} was cancelled")
        else:
            failure = ended.exception() or JobEnded(f"{ended.get_coro()!r} returned early")
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    if failure is not None:
        raise failure


def build_projections(
    settings: Settings, names: list[str], redis: AnyRedis, es: AsyncElasticsearch
) -> list[Projection]:
    """The named projections on the given clients."""
    available: dict[str, Projection] = {
        "redis": RedisScoresProjection(redis, settings.redis_generation),
        "comments": EsCommentsProjection(es, settings.es_comments_alias),
        "votes": EsVotesProjection(
            es, settings.es_votes_alias, retention_days=settings.votes_retention_days
        ),
    }
    return [available[name] for name in names]


# --- the APIs ---------------------------------------------------------------------------------


def auth_config(settings: Settings) -> AuthConfig:
    """How the APIs check tokens."""
    return AuthConfig(
        secret=settings.jwt_secret,
        algorithm=settings.jwt_algorithm,
        jwks_url=settings.jwt_jwks_url,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway_seconds=settings.jwt_leeway_seconds,
    )


def check_auth_settings(settings: Settings) -> None:
    """Refuse to serve with JWT settings unfit for this environment (one clear line)."""
    problems = auth_config_problems(auth_config(settings), settings.local)
    if not settings.local and len(settings.cursor_secret.encode()) < MIN_SECRET_BYTES:
        # Derived from the JWT secret it would be public in JWKS mode (the default secret).
        problems.append(f"TALLY_CURSOR_SECRET must be set, at least {MIN_SECRET_BYTES} bytes")
    if problems:
        raise SettingsError(
            "; ".join(problems) + " (set real JWT settings, or TALLY_ENV=local for a local run)"
        )


def token_verifier(settings: Settings) -> TokenVerifier:
    """The APIs' token verifier; refuses unfit settings."""
    check_auth_settings(settings)
    return TokenVerifier(config=auth_config(settings))


async def _clean_idempotency_keys(pool: AsyncConnectionPool[Any], settings: Settings) -> None:
    while True:
        await asyncio.sleep(settings.idempotency_cleanup_interval_seconds)
        try:
            async with pool.connection() as conn, conn.cursor() as cur:
                removed = await delete_expired_keys(cur, settings.idempotency_ttl_seconds)
            if removed:
                log.info("idempotency_keys_expired", removed=removed)
        except psycopg.Error as exc:
            log.warning("idempotency_cleanup_failed", error=str(exc))


@contextlib.asynccontextmanager
async def command_services(settings: Settings) -> AsyncIterator[CommandServices]:
    """The command API's services on PostgreSQL and Redis, every call bounded."""
    deadline = settings.command_deadline_ms / 1000
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        settings.pg_dsn,
        min_size=settings.pg_pool_min,
        max_size=settings.pg_pool_max,
        open=False,
        name="command-api",
        timeout=deadline,
        kwargs=connection_options(
            settings.pg_connect_timeout_seconds, settings.pg_statement_timeout_ms
        ),
    )
    await pool.open()
    redis = redis_client(
        settings,
        socket_timeout=settings.redis_timeout_ms / 1000,
        socket_connect_timeout=settings.redis_timeout_ms / 1000,
        max_connections=64,
    )
    executor = CommandExecutor(pool, settings.idempotency_ttl_seconds)
    board = ProgressBoard(redis, settings.kafka_group_prefix)
    recorder = HeadRecorder(board.publish_head, settings.redis_timeout_ms / 1000)
    run = recording_head(executor.run, recorder)
    committer: GroupCommitter | None = None
    submit: Submit
    if settings.group_commit:
        committer = GroupCommitter(
            run,
            settings.group_commit_max_wait_ms,
            settings.group_commit_max_batch,
            settings.group_commit_workers,
            settings.group_commit_max_queue,
            settings.command_deadline_ms,
        )
        await committer.start()
        submit = committer.submit
    else:

        async def submit_alone(item: WorkItem) -> Outcome:
            return (await run([item]))[0]

        submit = submit_alone

    async def postgres_answers() -> None:
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")

    cleanup = asyncio.create_task(_clean_idempotency_keys(pool, settings))
    try:
        yield CommandServices(
            submit=with_deadline(submit, deadline),
            rate_limiter=RateLimiter(
                redis,
                {
                    "vote": Limit(settings.vote_rate_limit, settings.vote_rate_window_seconds),
                    "comment": Limit(
                        settings.comment_rate_limit, settings.comment_rate_window_seconds
                    ),
                },
                timeout=settings.rate_limit_timeout_ms / 1000,
            ),
            verifier=token_verifier(settings),
            readiness={"postgres": postgres_answers, "redis": redis.ping},
        )
    finally:
        cleanup.cancel()
        if committer is not None:
            await committer.stop()
        await recorder.stop()
        await pool.close()
        await redis.aclose()


def command_app(settings: Settings | None = None) -> Litestar:
    """The command API on the real stores of ``settings`` (the environment by default)."""
    settings = settings or get_settings()
    return create_command_app(
        functools.partial(command_services, settings),
        CommandApiConfig(
            max_body_bytes=settings.max_body_bytes,
            cors_origins=parse_origins(settings.cors_origins),
            fast_lane=settings.command_fast_lane,
            trusted_proxies=settings.trusted_proxies,
            limits=[
                per_address(Limit(settings.write_limit_per_address, 60)),
                global_tier(Limit(settings.requests_limit_per_worker, 10)),
            ],
        ),
    )


@contextlib.asynccontextmanager
async def query_services(settings: Settings) -> AsyncIterator[QueryServices]:
    """The query API's readers on Redis and Elasticsearch, every call bounded."""
    redis = redis_client(
        settings,
        pool_wait=1,  # bounded: past 64 connections a read waits a second, then fails (503)
        max_connections=64,
        socket_timeout=2,
        socket_connect_timeout=1,
    )
    es = elasticsearch(settings, request_timeout=5)
    subscriber = redis_subscriber(settings)
    live = LiveHub(
        subscriber,
        settings.live_max_streams,
        settings.live_max_streams_per_client,
        progress=progress_channel(settings.kafka_group_prefix),
    )
    live.start()
    try:
        yield QueryServices(
            redis_reads=RedisReads(
                redis,
                settings.redis_generation,
                settings.ranking_snapshot_seconds,
                settings.ranking_cursor_ttl_seconds,
                settings.kafka_group_prefix,
                CursorSigner(
                    cursor_key(settings.cursor_secret, settings.jwt_secret),
                    settings.ranking_snapshot_max,
                ),
                settings.ranking_snapshot_max,
            ),
            es_reads=EsReads(es, settings.es_comments_alias),
            verifier=token_verifier(settings),
            live=live,
        )
    finally:
        await live.close()
        await subscriber.aclose()
        await redis.aclose()
        await es.close()


def query_app(settings: Settings | None = None) -> Litestar:
    """The query API on the real read models of ``settings`` (the environment by default)."""
    settings = settings or get_settings()
    return create_query_app(
        functools.partial(query_services, settings),
        QueryApiConfig(
            read_wait_ms=settings.read_wait_ms,
            page_cache_ms=settings.page_cache_ms,
            cors_origins=parse_origins(settings.cors_origins),
            trusted_proxies=settings.trusted_proxies,
            live_write_seconds=settings.live_write_seconds,
            limits=[
                per_address(Limit(settings.read_limit_per_address, 60)),
                per_endpoint(
                    "search",
                    r"^/api/comments/search$",
                    Limit(settings.search_limit_per_address, 60),
                ),
                global_tier(Limit(settings.requests_limit_per_worker, 10)),
            ],
        ),
    )
