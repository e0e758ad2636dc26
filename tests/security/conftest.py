"""The adversarial suite's fixtures: both APIs in this process, on the real test stack."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import msgspec
import pytest
from httpx import Response
from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool

from kernel.auth import mint_token
from kernel.settings import Settings
from tally.bootstrap import command_app, query_app
from tally.clients import redis_client

Factory = Callable[..., AbstractAsyncContextManager[AsyncTestClient[Any]]]


@pytest.fixture
def config(settings: Settings) -> Settings:
    """Settings of this test's own: Redis generation, consumer groups, indices."""
    tag = uuid.uuid4().hex[:8]
    return msgspec.structs.replace(
        settings, redis_generation=f"s{tag}", kafka_group_prefix=f"sec-{tag}"
    )


@pytest.fixture
def commands(config: Settings, clean_store: Any, redis: Any) -> Factory:
    """``async with commands(**overrides) as client``: the command API on an empty store."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[AsyncTestClient[Any]]:
        async with AsyncTestClient(command_app(msgspec.structs.replace(config, **overrides))) as c:
            yield c

    return start


@pytest.fixture
def queries(config: Settings) -> Factory:
    """``async with queries(**overrides) as client``: the query API."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[AsyncTestClient[Any]]:
        async with AsyncTestClient(query_app(msgspec.structs.replace(config, **overrides))) as c:
            yield c

    return start


def auth(settings: Settings, user: str, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(user, settings.jwt_secret, 300, **claims)}"}


def assert_problem(reply: Response, status: int, code: str | None = None) -> None:
    """A problem+json answer with this status (and problem type)."""
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json"), reply.headers
    body = reply.json()
    assert body["status"] == status and body["detail"], body
    if code is not None:
        assert body["type"] == f"urn:tally:problem:{code}", body


async def written(pool: AsyncConnectionPool[Any]) -> int:
    """How many events the log holds."""
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT count(*) FROM events")).fetchone()
    return int(row[0]) if row else 0


async def project_all(config: Settings, pool: AsyncConnectionPool[Any]) -> None:
    """Apply the whole log to the Redis projection of ``config``, as a projector would."""

    from event_store.postgres import PostgresEventStore
    from projectors.progress import ProgressBoard
    from projectors.redis_scores import RedisScoresProjection

    redis = redis_client(config)
    projection = RedisScoresProjection(redis, config.redis_generation)
    await projection.setup()
    await projection.mark_intact()
    store = PostgresEventStore(pool)
    async for batch in store.read_all(batch_size=5000):
        await projection.apply(batch)
    await ProgressBoard(redis, config.kafka_group_prefix).publish("redis", await store.head())
    await redis.aclose()
