"""The long-running back-end processes: the outbox relay and the projectors.

Each runs until SIGTERM or SIGINT, serves Prometheus metrics on its own port, and owns the
clients it opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from typing import Any

import structlog
from elasticsearch import AsyncElasticsearch
from prometheus_client import start_http_server
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from event_store.relay import OutboxRelay
from projectors.base import Projection
from projectors.es_comments import EsCommentsProjection
from projectors.es_indices import COMMENTS_MAPPING, VOTES_MAPPING
from projectors.es_votes import EsVotesProjection
from projectors.rebuilds import IndexRebuild, Rebuild, RedisGenerationRebuild
from projectors.redis_scores import RedisScoresProjection
from projectors.runner import ProjectorRunner
from tally.settings import Settings

log = structlog.get_logger(__name__)

PROJECTIONS = ("redis", "comments", "votes")


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Expose /metrics on ``port`` (0 turns it off); a taken port is logged, not fatal."""
    if not port:
        return
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log.warning("metrics_port_unavailable", port=port, error=str(exc))


@contextlib.asynccontextmanager
async def open_pool(settings: Settings, name: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """A small autocommit pool on the event store."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        settings.pg_dsn,
        min_size=1,
        max_size=4,
        open=False,
        name=name,
        kwargs={"autocommit": True},
    )
    await pool.open()
    try:
        yield pool
    finally:
        await pool.close()


async def run_relay(settings: Settings) -> None:
    """``tally relay``."""
    stop = stop_on_signals()
    serve_metrics(settings.relay_metrics_port, settings.metrics_host)
    async with open_pool(settings, "relay") as pool:
        await OutboxRelay(settings, pool).run(stop)


@contextlib.asynccontextmanager
async def open_stores(
    settings: Settings, es_timeout: float
) -> AsyncIterator[tuple[Redis, AsyncElasticsearch]]:
    """Clients of the read-model stores, closed afterwards."""
    redis = Redis.from_url(settings.redis_url)
    es = AsyncElasticsearch(settings.es_url, request_timeout=es_timeout)
    try:
        yield redis, es
    finally:
        await redis.aclose()
        await es.close()


@contextlib.asynccontextmanager
async def open_projections(settings: Settings, names: list[str]) -> AsyncIterator[list[Projection]]:
    """Build the named projections with their clients; close the clients afterwards."""
    async with open_stores(settings, es_timeout=30) as (redis, es):
        available: dict[str, Projection] = {
            "redis": RedisScoresProjection(redis, settings.redis_generation),
            "comments": EsCommentsProjection(es, settings.es_comments_alias),
            "votes": EsVotesProjection(es, settings.es_votes_alias),
        }
        yield [available[name] for name in names]


@contextlib.asynccontextmanager
async def open_rebuilds(settings: Settings, names: list[str]) -> AsyncIterator[list[Rebuild]]:
    """Rebuild targets for the named projections, with their clients."""
    async with open_stores(settings, es_timeout=60) as (redis, es):
        available: dict[str, Rebuild] = {
            "redis": RedisGenerationRebuild(redis, settings.redis_generation),
            "comments": IndexRebuild(
                "comments",
                es,
                settings.es_comments_alias,
                COMMENTS_MAPPING,
                lambda index: EsCommentsProjection(es, index),
            ),
            "votes": IndexRebuild(
                "votes",
                es,
                settings.es_votes_alias,
                VOTES_MAPPING,
                lambda index: EsVotesProjection(es, index),
            ),
        }
        yield [available[name] for name in names]


async def run_projectors(settings: Settings, names: list[str]) -> None:
    """``tally project NAME...``: one runner per projection, in one process."""
    stop = stop_on_signals()
    serve_metrics(settings.projector_metrics_port, settings.metrics_host)
    async with (
        open_pool(settings, "projectors") as pool,
        open_projections(settings, names) as projections,
    ):
        await asyncio.gather(*(ProjectorRunner(p, settings, pool).run(stop) for p in projections))
