"""``create_app()``: the command API, wired from settings in one place."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import structlog
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.plugins.prometheus import PrometheusController
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from command_api.executor import CommandExecutor
from command_api.group_commit import GroupCommitter, with_deadline
from command_api.idempotency import delete_expired_keys
from command_api.problems import exception_to_problem
from command_api.rate_limit import VoteRateLimiter
from command_api.routes import ROUTES, current_user
from command_api.unit_of_work import Outcome, WorkItem
from event_store.postgres import connection_options
from tally.auth import TokenVerifier
from tally.http_middleware import http_middleware
from tally.problems import problem
from tally.settings import Settings, get_settings

log = structlog.get_logger(__name__)


@get("/health", operation_id="health", include_in_schema=False)
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@get("/ready", operation_id="ready", include_in_schema=False)
async def ready(state: State) -> Any:
    """Readiness: PostgreSQL and Redis answer."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2), state.pool.connection() as conn:
            await conn.execute("SELECT 1")
        checks["postgres"] = "ok"
    except (psycopg.Error, TimeoutError, OSError) as exc:
        checks["postgres"] = f"down: {type(exc).__name__}"
    try:
        async with asyncio.timeout(2):
            await state.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"down: {type(exc).__name__}"
    if all(v == "ok" for v in checks.values()):
        return {"status": "ready", "checks": checks}
    return problem(503, "not-ready", "Not ready", "a dependency is down", "/ready", checks=checks)


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


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the command API from ``settings`` (the environment by default)."""
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
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
        redis = Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.redis_timeout_ms / 1000,
            socket_connect_timeout=settings.redis_timeout_ms / 1000,
            max_connections=64,
        )
        executor = CommandExecutor(pool, settings.idempotency_ttl_seconds)
        committer: GroupCommitter | None = None
        if settings.group_commit:
            committer = GroupCommitter(
                executor.run,
                settings.group_commit_max_wait_ms,
                settings.group_commit_max_batch,
                settings.group_commit_workers,
                settings.group_commit_max_queue,
                settings.command_deadline_ms,
            )
            await committer.start()
            app.state.submit = with_deadline(committer.submit, deadline)
        else:

            async def submit_alone(item: WorkItem) -> Outcome:
                return (await executor.run([item]))[0]

            app.state.submit = with_deadline(submit_alone, deadline)
        app.state.pool = pool
        app.state.redis = redis
        app.state.verifier = TokenVerifier(settings.jwt_secret, settings.jwt_algorithm)
        app.state.rate_limiter = VoteRateLimiter(
            redis,
            settings.vote_rate_limit,
            settings.vote_rate_window_seconds,
            timeout=settings.rate_limit_timeout_ms / 1000,
        )
        cleanup = asyncio.create_task(_clean_idempotency_keys(pool, settings))
        try:
            yield
        finally:
            cleanup.cancel()
            if committer is not None:
                await committer.stop()
            await pool.close()
            await redis.aclose()

    return Litestar(
        route_handlers=[*ROUTES, health, ready, PrometheusController],
        dependencies={"user_id": Provide(current_user, sync_to_thread=False)},
        lifespan=[lifespan],
        middleware=[http_middleware("command_api")],
        exception_handlers={Exception: exception_to_problem},
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="Tally command API", version="0.1.0", path="/schema"),
    )
