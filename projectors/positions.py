"""Where a projection's partition tracker is kept: ``projection_partitions`` and its epoch.

Positions only move up (``GREATEST``), so a process that still holds an older view of a
partition it no longer owns cannot move it back; a new epoch replaces the rows as a whole.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

from projectors.partition_tracker import PartitionTracker

# Every projection's low-water mark: the least position over all partitions of its epoch (0 while
# one of them has none yet).
LOW_WATER_MARKS = (
    "SELECT e.projection, CASE WHEN count(p.partition) < e.partitions THEN 0"
    " ELSE coalesce(min(p.last_position), 0) END"
    " FROM projection_epochs e LEFT JOIN projection_partitions p"
    " ON p.projection = e.projection AND p.partition < e.partitions"
    " GROUP BY e.projection, e.partitions"
)


async def load(pool: AsyncConnectionPool[Any], projection: str) -> PartitionTracker:
    """The tracker as last saved (empty for a projection that never ran)."""
    async with pool.connection() as conn:
        epoch = await (
            await conn.execute(
                "SELECT epoch, partitions FROM projection_epochs WHERE projection = %s",
                (projection,),
            )
        ).fetchone()
        rows = await (
            await conn.execute(
                "SELECT partition, last_position FROM projection_partitions WHERE projection = %s",
                (projection,),
            )
        ).fetchall()
    number, partitions = (int(epoch[0]), int(epoch[1])) if epoch else (0, 0)
    return PartitionTracker(number, partitions, {int(p): int(pos) for p, pos in rows})


async def save(
    pool: AsyncConnectionPool[Any], projection: str, tracker: PartitionTracker, new_epoch: bool
) -> int:
    """Record the tracker; with ``new_epoch``, replace the old epoch's rows in one transaction.

    Returns the projection's low-water mark over every process's saved partitions.
    """
    async with pool.connection() as conn, conn.transaction():
        if new_epoch:
            await conn.execute(
                "INSERT INTO projection_epochs (projection, epoch, partitions)"
                " VALUES (%s, %s, %s) ON CONFLICT (projection)"
                " DO UPDATE SET epoch = excluded.epoch, partitions = excluded.partitions",
                (projection, tracker.epoch, tracker.partitions),
            )
            await conn.execute(
                "DELETE FROM projection_partitions WHERE projection = %s", (projection,)
            )
        await conn.execute(
            "INSERT INTO projection_partitions (projection, partition, last_position)"
            " SELECT %s, * FROM unnest(%s::int[], %s::int8[])"
            " ON CONFLICT (projection, partition)"
            " DO UPDATE SET last_position ="
            " GREATEST(projection_partitions.last_position, excluded.last_position)",
            (projection, list(tracker.seen), list(tracker.seen.values())),
        )
        row = await (
            await conn.execute(
                "SELECT mark FROM (" + LOW_WATER_MARKS + ") AS m(projection, mark)"
                " WHERE projection = %s",
                (projection,),
            )
        ).fetchone()
    return int(row[0]) if row else 0
