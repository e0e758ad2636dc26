"""Idempotency keys: claimed in the batch transaction, stored with the reply it produced.

A key is claimed with a transaction-scoped advisory lock, so a duplicate in flight is told so at
once (409) instead of waiting. The stored row is read only after the lock is held, so a reader
always sees the row of a request that finished before it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from psycopg import AsyncCursor
from psycopg.rows import TupleRow


class IdempotencyKeyInFlight(Exception):
    """Another request with this key is being processed right now."""


class IdempotencyKeyReused(Exception):
    """This key was used before with a different request."""


class StoredReply:
    """A reply saved under a key."""

    __slots__ = ("body", "request_hash", "status")

    def __init__(self, request_hash: bytes, status: int, body: bytes) -> None:
        self.request_hash = request_hash
        self.status = status
        self.body = body


def request_fingerprint(method: str, path: str, body: bytes) -> bytes:
    """What makes two requests 'the same' for an idempotency key."""
    return hashlib.sha256(b"%s %s\n%s" % (method.encode(), path.encode(), body)).digest()


async def claim_keys(
    cur: AsyncCursor[TupleRow], claims: Sequence[tuple[str, str]], ttl_seconds: int
) -> tuple[list[bool], dict[tuple[str, str], StoredReply]]:
    """Try to lock each (user, key); return which locks were won and the live stored replies."""
    users = [u for u, _ in claims]
    keys = [k for _, k in claims]
    await cur.execute(
        "SELECT pg_try_advisory_xact_lock(hashtextextended(u || chr(31) || k, 0))"
        " FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS t(u, k, i) ORDER BY i",
        (users, keys),
    )
    won = [bool(row[0]) for row in await cur.fetchall()]
    await cur.execute(
        "SELECT i.user_id, i.key, i.request_hash, i.status, i.response"
        " FROM idempotency_keys i JOIN unnest(%s::text[], %s::text[]) AS t(u, k)"
        " ON i.user_id = t.u AND i.key = t.k"
        " WHERE i.created_at > now() - make_interval(secs => %s)",
        (users, keys, ttl_seconds),
    )
    stored = {
        (row[0], row[1]): StoredReply(bytes(row[2]), int(row[3]), bytes(row[4]))
        for row in await cur.fetchall()
    }
    return won, stored


async def store_replies(
    cur: AsyncCursor[TupleRow], rows: Sequence[tuple[str, str, bytes, int, bytes]]
) -> None:
    """Save (user, key, request hash, status, body) rows; an expired row is overwritten."""
    if not rows:
        return
    columns = list(zip(*rows, strict=True))
    await cur.execute(
        "INSERT INTO idempotency_keys (user_id, key, request_hash, status, response)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::int2[], %s::bytea[])"
        " ON CONFLICT (user_id, key) DO UPDATE SET request_hash = excluded.request_hash,"
        " status = excluded.status, response = excluded.response, created_at = now()",
        [list(c) for c in columns],
    )


async def delete_expired_keys(cur: AsyncCursor[TupleRow], ttl_seconds: int) -> int:
    """Remove keys older than the TTL; return how many."""
    await cur.execute(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => %s)",
        (ttl_seconds,),
    )
    return cur.rowcount
