"""On the real engine: items refused for now are retried alone, the others are written once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from elasticsearch import AsyncElasticsearch
from prometheus_client import REGISTRY

from kernel.settings import Settings
from projectors.es_indices import bulk_write


@pytest.fixture
async def es(settings: Settings) -> AsyncIterator[AsyncElasticsearch]:
    client = AsyncElasticsearch(settings.es_url, request_timeout=30)
    yield client
    await client.close()


async def test_a_bulk_across_a_blocked_and_an_open_index_lands_whole_once_unblocked(
    es: AsyncElasticsearch,
) -> None:
    tag = uuid.uuid4().hex[:8]
    blocked, open_ = f"bulk-blocked-{tag}", f"bulk-open-{tag}"
    for index in (blocked, open_):
        await es.indices.create(index=index)
    await es.indices.put_settings(index=blocked, settings={"index.blocks.write": True})
    operations = [
        ({"index": {"_index": blocked if n % 2 else open_, "_id": str(n)}}, {"n": n})
        for n in range(10)
    ]
    retried = REGISTRY.get_sample_value("tally_projection_bulk_items_retried_total") or 0.0

    async def unblock_soon() -> None:
        await asyncio.sleep(0.5)
        await es.indices.put_settings(index=blocked, settings={"index.blocks.write": False})

    try:
        unblocking = asyncio.create_task(unblock_soon())
        refused = await bulk_write(es, operations, patience=10)
        await unblocking
        assert refused == []
        await es.indices.refresh(index=f"{blocked},{open_}")
        assert (await es.count(index=blocked))["count"] == 5
        assert (await es.count(index=open_))["count"] == 5
        # Only the blocked index's five items went again, however many times.
        again = REGISTRY.get_sample_value("tally_projection_bulk_items_retried_total") or 0.0
        assert again - retried >= 5 and (again - retried) % 5 == 0
        versions = await es.mget(index=open_, ids=[str(n) for n in range(0, 10, 2)])
        assert {d["_version"] for d in versions["docs"]} == {1}  # the open ones written once
    finally:
        await es.indices.delete(index=f"{blocked},{open_}")
