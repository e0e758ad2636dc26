"""Elasticsearch refusing writes and PostgreSQL restarting under voting: waited out, nothing lost,
and no process exits."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from tally import stack
from tests.faults.harness import System, report, until


async def test_a_write_blocked_index_is_waited_out_and_nothing_is_parked(
    system: System, load: Any, es: AsyncElasticsearch
) -> None:
    index = system.config.es_comments_alias
    async with load(seed=21) as run:
        await asyncio.sleep(4)
        await es.indices.put_settings(index=index, settings={"index.blocks.write": True})
        try:
            await until(
                lambda: any(
                    "cluster_block" in e["error"] for e in system.logged("projection_store_error")
                ),
                30,
                "the comments projector met the block",
            )
            await asyncio.sleep(4)
        finally:
            await es.indices.put_settings(index=index, settings={"index.blocks.write": False})
        unblocked = time.monotonic()
        _, verdict = await run.finish()
    report(
        "es-write-block",
        healed_s=round(time.monotonic() - unblocked, 1),
        retried=len(system.logged("projection_store_error")),
        acked=len(run.voters.tally.acked),
    )
    assert verdict.ok, str(verdict)
    assert not system.logged("events_parked"), "a blocked index is not poison"


async def test_every_process_rides_through_a_postgresql_restart(
    system: System, load: Any, servers: dict[str, stack.Server]
) -> None:
    postgres = servers["postgres"]
    async with load(seed=22) as run:
        await asyncio.sleep(4)
        await asyncio.to_thread(postgres.stop)
        await asyncio.sleep(2)
        await asyncio.to_thread(postgres.up)
        back = time.monotonic()
        await asyncio.sleep(5)
        _, verdict = await run.finish()
    report(
        "postgres-restart",
        healed_s=round(time.monotonic() - back, 1),
        vote_statuses=run.voters.tally.statuses,
        acked=len(run.voters.tally.acked),
        alive=system.alive(),
    )
    assert verdict.ok, str(verdict)
    # Nobody exited: each process is the one started at the beginning.
    assert all(system.alive().values()), system.alive()
    assert set(system.restarts.values()) <= {0, 1}, system.restarts
    # While it was down, votes were refused cleanly (503), then acknowledged again.
    assert run.voters.tally.statuses.get(503, 0) > 0
    assert not {s for s in run.voters.tally.statuses if s >= 500} - {503}


async def test_a_deleted_comment_index_is_noticed_and_rebuilt(
    system: System, load: Any, es: AsyncElasticsearch
) -> None:
    alias = system.config.es_comments_alias
    async with load(seed=23) as run:
        await asyncio.sleep(4)
        live = sorted((await es.indices.get_alias(name=alias)).body)
        await es.indices.delete(index=live)  # the index, and its alias with it
        deleted = time.monotonic()
        noticed = await until(lambda: bool(system.logged("read_model_lost")), 30, "noticed")
        rebuilt = await until(lambda: bool(system.logged("read_model_rebuilt")), 120, "rebuilt")
        await asyncio.sleep(3)
        _, verdict = await run.finish()
    report(
        "es-index-deleted",
        noticed_s=round(noticed, 1),
        rebuilt_s=round(rebuilt, 1),
        healed_s=round(time.monotonic() - deleted, 1),
        acked=len(run.voters.tally.acked),
    )
    assert verdict.ok, str(verdict)
    assert {e["projection"] for e in system.logged("read_model_rebuilt")} == {"comments"}
    assert await es.indices.exists_alias(name=alias)


@pytest.mark.parametrize("server", ["redis", "opensearch"])
async def test_every_process_rides_through_a_read_model_store_restart(
    system: System, load: Any, servers: dict[str, stack.Server], server: str
) -> None:
    store = servers[server]
    async with load(seed=24) as run:
        await asyncio.sleep(4)
        await asyncio.to_thread(store.stop)
        await asyncio.sleep(2)
        await asyncio.to_thread(store.up)
        back = time.monotonic()
        await asyncio.sleep(5)
        _, verdict = await run.finish()
    report(
        f"{server}-restart",
        healed_s=round(time.monotonic() - back, 1),
        vote_statuses=run.voters.tally.statuses,
        read_statuses=run.readers.reads.statuses,
        acked=len(run.voters.tally.acked),
    )
    assert verdict.ok, str(verdict)
    assert all(system.alive().values()), system.alive()
    assert set(system.restarts.values()) <= {0, 1}, system.restarts
    assert not run.readers.reads.anomalies, run.readers.reads.anomalies[:5]
