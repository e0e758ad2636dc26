"""Fault-suite fixtures: a running system with comments under load, and the stack's servers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from kernel.settings import Settings
from tally import stack
from tests.faults.harness import (
    Readers,
    Run,
    System,
    Voters,
    fault_settings,
    post_comments,
    running_system,
)


@pytest.fixture
async def es(settings: Settings) -> AsyncIterator[AsyncElasticsearch]:
    client = AsyncElasticsearch(settings.es_url, request_timeout=30)
    yield client
    await client.close()


@pytest.fixture
def servers(settings: Settings) -> Iterator[dict[str, stack.Server]]:
    """The test stack's servers by name; each is running again after the test."""
    found = {server.name: server for server in stack.servers(settings)}
    yield found
    for server in found.values():
        server.up()


@pytest.fixture
def system(settings: Settings, clean_store: Any, redis: Redis, tmp_path: Path) -> Iterator[System]:
    """Every Tally process on settings of its own (on an emptied store and Redis); logs in the
    test's tmp_path."""
    with running_system(fault_settings(settings), logs=tmp_path) as running:
        yield running


@pytest.fixture
async def comments(system: System) -> list[str]:
    return await post_comments(system, f"faults-{uuid.uuid4().hex[:6]}", 12)


@pytest.fixture
def load(
    system: System,
    comments: list[str],
    clean_store: AsyncConnectionPool[Any],
    redis: Redis,
    es: AsyncElasticsearch,
) -> Any:
    """``load(seed)``: a fault run of 40 voters and 4 readers on the system's comments."""

    def start(seed: int = 1, users: int = 40) -> Run:
        return Run(
            system,
            Voters(system, comments, users=users, seed=seed),
            Readers(system, comments),
            (clean_store, redis, es),
        )

    return start
