"""A batch's reads of vote rows and stored replies probe the primary key, whatever the size.

The planner guesses 100 rows for any set-returning function; joined plainly to the batch's
keys, a table of a few tens of thousands of rows was read whole (a hash join over a
sequential scan: 5-6 ms per batch at 20,000 vote rows). Each read here runs as the unit of
work sends it, on tables of such sizes, and must find exactly the rows that exist through
index probes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from psycopg import AsyncClientCursor
from psycopg_pool import AsyncConnectionPool

from command_api import idempotency, unit_of_work
from event_store.postgres import json_rows

_FILL = """
INSERT INTO votes (comment_id, user_id, value, version, position)
SELECT md5('c' || n)::uuid, 'user-' || n, 1, 1, n FROM generate_series(1, %(rows)s) AS n;
INSERT INTO idempotency_keys (user_id, key, request_hash, status, response, position)
SELECT 'user-' || n, 'key-' || n, '\\x00', 200, '{}', n FROM generate_series(1, %(rows)s) AS n;
ANALYZE votes;
ANALYZE idempotency_keys;
"""


def _scanned_whole(plan: Any) -> set[str]:
    """The relations a plan reads with a sequential scan."""
    found = set()
    if plan.get("Node Type") == "Seq Scan":
        found.add(plan["Relation Name"])
    for child in plan.get("Plans", []):
        found |= _scanned_whole(child)
    return found


async def _plan_and_rows(cur: AsyncClientCursor[Any], statement: str) -> tuple[set[str], int]:
    await cur.execute("EXPLAIN (FORMAT JSON) " + statement)
    row = await cur.fetchone()
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    await cur.execute(statement)
    return _scanned_whole(plan[0]["Plan"]), len(await cur.fetchall())


@pytest.mark.parametrize("rows", [2_000, 20_000])
async def test_a_batch_reads_its_rows_by_key_whatever_the_table_size(
    clean_store: AsyncConnectionPool[Any], rows: int
) -> None:
    async with clean_store.connection() as conn:
        cur = AsyncClientCursor(conn)
        await cur.execute(_FILL, {"rows": rows})
        await cur.execute("SELECT md5('c' || n)::uuid FROM generate_series(1, 20) AS n")
        comments = [r[0] for r in await cur.fetchall()]
        present = [{"c": c, "u": f"user-{n}"} for n, c in enumerate(comments, start=1)]
        absent = [{"c": c, "u": "nobody"} for c in comments[:5]]
        votes = cur.mogrify(unit_of_work._VOTES, (json_rows(present + absent),))
        claims = [{"i": n, "u": f"user-{n}", "k": f"key-{n}"} for n in range(1, 21)]
        claims += [{"i": 99, "u": "user-1", "k": "never-used"}]
        replies = cur.mogrify(
            idempotency.STORED_REPLIES, {"claims": json_rows(claims), "ttl": 3600}
        )

        assert await _plan_and_rows(cur, votes) == (set(), 20)
        assert await _plan_and_rows(cur, replies) == (set(), 20)
