"""The outbox and the relay's partition chain, in PostgreSQL.

Outbox rows are written with their events (one transaction) and read in position order. Positions
commit in order (guarantee 2), so once a batch is deleted every position at or below its last
has been published: the highest chain position is also how far the relay has published.

The chain (``relay_partitions``) holds, for the current epoch (``relay_epoch``), the last
position published on each partition. Every write here is fenced by the relay's lease.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from psycopg import AsyncConnection

from event_store.lease import RelayLease


class LeaseLost(Exception):
    """Another relay holds the lease now: this one must stop writing and stand by."""


class OutboxRow(NamedTuple):
    position: int
    key: str
    type: str
    envelope: bytes
    traceparent: str | None
    correlation_id: str | None


@dataclass
class Chain:
    """The partition mapping the relay publishes under, and each partition's last position."""

    epoch: int = 0
    partitions: int = 0
    last: dict[int, int] = field(default_factory=dict)

    @property
    def published(self) -> int:
        """The highest position published (everything at or below it was)."""
        return max(self.last.values(), default=0)


# The first outbox rows, then each one's event looked up by key (``LIMIT 1`` keeps the lookup
# a lookup). Joined freely, the planner may scan the events instead, from the first position:
# a merge join, or a nested loop over the events with the outbox scanned once per event when
# its statistics say the outbox is nearly empty, which a drained outbox often is. Either costs
# seconds a batch as the log grows: the lease runs out and the projections stand still.
_BATCH = """
SELECT o.position, o.key, e.type, e.envelope, e.traceparent, e.correlation_id
FROM (
    SELECT position, key FROM outbox WHERE position > %s ORDER BY position LIMIT %s
) AS o CROSS JOIN LATERAL (
    SELECT type, convert_to(
        json_build_object(
            'event_id', event_id, 'stream_id', stream_id, 'stream_version', stream_version,
            'position', position, 'occurred_at', recorded_at,
            'correlation_id', metadata->>'correlation_id',
            'causation_id', metadata->>'causation_id', 'event', data)::text, 'UTF8') AS envelope,
        metadata->>'traceparent' AS traceparent, metadata->>'correlation_id' AS correlation_id
    FROM events WHERE events.position = o.position LIMIT 1
) AS e
ORDER BY o.position
"""


async def fetch_batch(conn: AsyncConnection[Any], limit: int, after: int = 0) -> list[OutboxRow]:
    """The oldest ``limit`` outbox rows after position ``after``, with their envelopes, in
    position order.

    A relay passes the last position it deleted: the rows before it are gone, and their dead
    index entries (until vacuum) would otherwise be walked again by every batch, a cost that
    grows with the backlog drained (120 ms a batch after 100k events). Positions only arrive
    in order (guarantee 2), so no row can appear below it later.
    """
    rows = await (await conn.execute(_BATCH, (after, limit))).fetchall()
    return [OutboxRow(p, k, t, bytes(e), tp, c) for p, k, t, e, tp, c in rows]


async def load_chain(conn: AsyncConnection[Any]) -> Chain:
    """The epoch, its partition count and the chain, as last committed."""
    epoch = await (await conn.execute("SELECT epoch, partitions FROM relay_epoch")).fetchone()
    rows = await (
        await conn.execute("SELECT partition, last_position FROM relay_partitions")
    ).fetchall()
    number, partitions = (int(epoch[0]), int(epoch[1])) if epoch else (0, 0)
    return Chain(number, partitions, {int(p): int(pos) for p, pos in rows})


async def start_epoch(conn: AsyncConnection[Any], lease: RelayLease, partitions: int) -> Chain:
    """A new mapping of ``partitions``: every partition's chain starts at the highest position
    published so far, so whatever a projector has not seen is healed from the store."""
    async with conn.transaction():
        await _fence(conn, lease)
        old = await load_chain(conn)
        published = old.published
        chain = Chain(old.epoch + 1, partitions, dict.fromkeys(range(partitions), published))
        await conn.execute(
            "UPDATE relay_epoch SET epoch = %s, partitions = %s", (chain.epoch, partitions)
        )
        await conn.execute("DELETE FROM relay_partitions")
        await _save_chain(conn, chain.last)
    return chain


async def commit_batch(
    conn: AsyncConnection[Any],
    lease: RelayLease,
    first: int,
    last: int,
    changed: dict[int, int],
) -> None:
    """Kafka acked positions ``first..last``: forget them and record the chain, fenced."""
    async with conn.transaction():
        await _fence(conn, lease)
        await conn.execute("DELETE FROM outbox WHERE position BETWEEN %s AND %s", (first, last))
        await _save_chain(conn, changed)


async def renew(conn: AsyncConnection[Any], lease: RelayLease) -> None:
    """Renew the lease on its own (while idle); ``LeaseLost`` if another relay took it."""
    await _fence(conn, lease)


async def backlog(conn: AsyncConnection[Any]) -> tuple[int, float]:
    """(events waiting, age of the oldest in seconds)."""
    row = await (
        await conn.execute(
            # Outbox positions are contiguous, so max - min + 1 counts them cheaply.
            "SELECT (SELECT max(position) - min(position) + 1 FROM outbox),"
            " (SELECT extract(epoch FROM now() - recorded_at) FROM events"
            "  WHERE position = (SELECT min(position) FROM outbox))"
        )
    ).fetchone()
    depth, age = row if row else (None, None)
    return int(depth or 0), float(age or 0)


async def _fence(conn: AsyncConnection[Any], lease: RelayLease) -> None:
    if not await lease.renew(conn):
        raise LeaseLost("the relay lease was taken over")


async def _save_chain(conn: AsyncConnection[Any], positions: dict[int, int]) -> None:
    if not positions:
        return
    await conn.execute(
        "INSERT INTO relay_partitions (partition, last_position)"
        " SELECT * FROM unnest(%s::int[], %s::int8[])"
        " ON CONFLICT (partition) DO UPDATE SET last_position = excluded.last_position",
        (list(positions), list(positions.values())),
    )
