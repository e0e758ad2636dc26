"""A relay leader that stops making progress is replaced, and cannot do harm when it wakes up."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

from psycopg_pool import AsyncConnectionPool

from tests.faults.harness import System, report, until


async def test_a_paused_relay_leader_is_replaced_and_fenced_when_it_wakes(
    system: System, load: Any, clean_store: AsyncConnectionPool[Any]
) -> None:
    ports = {"relay": system.ports.relay_metrics, "standby": system.ports.standby_metrics}
    system.start("standby")

    def leading(name: str) -> bool:
        return system.metric(ports[name], "tally_relay_leader") == 1

    await until(lambda: system.metric(ports["standby"], "tally_relay_leader") == 0, 30, "standby")
    backwards: list[str] = []
    watching = asyncio.create_task(_watch_chain(clean_store, backwards))
    try:
        async with load(seed=31) as run:
            await asyncio.sleep(4)
            leader = "relay" if leading("relay") else "standby"
            other = "standby" if leader == "relay" else "relay"
            system.signal(leader, signal.SIGSTOP)  # keeps its connections, stops renewing
            takeover = await until(lambda: leading(other), 20, "a standby leads")
            await asyncio.sleep(4)
            system.signal(leader, signal.SIGCONT)
            stepped_down = await until(lambda: not leading(leader), 20, "the old leader yields")
            await asyncio.sleep(3)
            _, verdict = await run.finish()
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    async with clean_store.connection() as conn:
        left = await (await conn.execute("SELECT count(*) FROM outbox")).fetchone()
    report(
        "relay-paused",
        takeover_s=round(takeover, 1),
        old_leader_yielded_s=round(stepped_down, 1),
        leases_lost=len(system.logged("relay_lease_lost")),
        acked=len(run.voters.tally.acked),
    )
    assert takeover < 15
    assert verdict.ok, str(verdict)
    assert not backwards, backwards[:3]
    assert left == (0,)


async def _watch_chain(pool: AsyncConnectionPool[Any], backwards: list[str]) -> None:
    """Note every time a partition's published position goes back within an epoch."""
    seen: dict[tuple[int, int], int] = {}
    while True:
        async with pool.connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT e.epoch, p.partition, p.last_position"
                    " FROM relay_partitions p, relay_epoch e"
                )
            ).fetchall()
        for epoch, partition, position in rows:
            before = seen.get((epoch, partition), 0)
            if position < before:
                backwards.append(f"epoch {epoch} partition {partition}: {before} -> {position}")
            seen[(epoch, partition)] = max(before, position)
        await asyncio.sleep(0.1)
        _ = time.monotonic()
