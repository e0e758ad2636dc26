"""Shared fixtures. Integration tests talk to the local test stack started by ``make test``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from event_store.migrate import EMPTY_EVERYTHING, ensure_database, migrate
from kernel.settings import Settings, load_settings
from tally.clients import kafka_access, redis_client


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Settings of the test stack; refuses anything but a ``*_test`` database."""
    settings = load_settings()
    dbname = psycopg.conninfo.conninfo_to_dict(settings.pg_dsn).get("dbname", "")
    if not str(dbname).endswith("_test"):
        pytest.exit(
            f"tests truncate tables: point TALLY_PG_DSN at a *_test database (got {dbname!r});"
            " run them with `make test`",
            returncode=2,
        )
    return settings


@pytest.fixture(scope="session", autouse=True)
async def lean_broker() -> None:
    """Delete the topics earlier test sessions left on the test stack's broker: every test has
    topics of its own, and a broker with thousands of partitions restarts slowly. Nothing
    happens outside the test stack (unit tests run without one)."""
    settings = load_settings()
    dbname = psycopg.conninfo.conninfo_to_dict(settings.pg_dsn).get("dbname", "")
    if not str(dbname).endswith("_test"):
        return
    admin = AIOKafkaAdminClient(**kafka_access(settings).client_options())
    try:
        await admin.start()
        left = [t for t in await admin.list_topics() if t.startswith(("test.", "tally.stack-"))]
        for start in range(0, len(left), 100):
            await admin.delete_topics(left[start : start + 100])
    except KafkaError as exc:  # no broker: the tests that need one say so themselves
        print(f"could not clean the test broker: {exc!r}")
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def pool(settings: Settings) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """A connection pool on the migrated test database."""
    try:
        await ensure_database(settings.pg_dsn)
    except psycopg.OperationalError as exc:
        pytest.exit(f"the test stack is not running ({exc}); run `make test`", returncode=2)
    await migrate(settings.pg_dsn)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        settings.pg_dsn,
        min_size=2,
        max_size=40,
        open=False,
        check=AsyncConnectionPool.check_connection,  # fault tests restart the server
    )
    await pool.open()
    yield pool
    await pool.close()


@pytest.fixture
async def clean_store(pool: AsyncConnectionPool[Any]) -> AsyncConnectionPool[Any]:
    """An empty event store and write model."""
    async with pool.connection() as conn:
        await conn.execute(EMPTY_EVERYTHING)
    return pool


@pytest.fixture
async def apool(settings: Settings, clean_store: Any) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """An autocommit pool on an empty store, as the relay and the projectors use."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        settings.pg_dsn,
        min_size=1,
        max_size=8,
        open=False,
        kwargs={"autocommit": True},
        check=AsyncConnectionPool.check_connection,
    )
    await pool.open()
    yield pool
    await pool.close()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    """The test Redis, emptied."""
    client = redis_client(settings)
    await client.flushdb()
    yield client
    await client.aclose()
