"""The combined run of the issue: projectors, relay and broker killed in turn under voting."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path
from typing import Any

from elasticsearch import AsyncElasticsearch
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from tally import stack
from tally.settings import Settings
from tests.faults.harness import (
    Voters,
    compare,
    fault_settings,
    healed,
    post_comments,
    report,
    running_system,
)


async def test_projectors_relay_and_broker_killed_in_turn_lose_no_vote(
    settings: Settings, clean_store: AsyncConnectionPool[Any], redis: Redis, tmp_path: Path
) -> None:
    config = fault_settings(settings)
    broker = next(s for s in stack.servers(settings) if s.name == "kafka")
    es = AsyncElasticsearch(settings.es_url)
    try:
        with running_system(config, logs=tmp_path) as system:
            comments = await post_comments(system, f"faults-{uuid.uuid4().hex[:6]}", 12)
            voters = Voters(system, comments, users=40, seed=1)
            stop = asyncio.Event()
            load = asyncio.create_task(voters.run(stop))
            await asyncio.sleep(15)
            system.kill("projector", signal.SIGKILL)
            await asyncio.sleep(3)
            system.start("projector")
            await asyncio.sleep(12)
            system.kill("relay", signal.SIGKILL)
            await asyncio.sleep(3)
            system.start("relay")
            await asyncio.sleep(12)
            await asyncio.to_thread(broker.stop)
            await asyncio.to_thread(broker.up)
            await asyncio.sleep(15)
            stop.set()
            await load
            took, verdict = await healed(
                lambda: compare(system, voters.tally, clean_store, redis, es), 120
            )
            report(
                "combined",
                healed_s=round(took, 1),
                acked=len(voters.tally.acked),
                sent=voters.tally.sent,
                statuses=voters.tally.statuses,
            )
            assert verdict.ok, str(verdict)
    finally:
        await es.close()
        await asyncio.to_thread(broker.up)
