"""Idempotency keys: claimed in the batch transaction, stored with the reply they produced.

A key is claimed with a transaction-scoped advisory lock, so a duplicate in flight is told so
at once (409) instead of waiting. The stored row is read by a later statement than the one that
took the lock, so it sees the row of a request that finished before the lock was won.
The stored reply leaves its position out; the ``position`` column is filled in from the head of
the log by the same statement that appends the events.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec
from psycopg import AsyncCursor
from psycopg.rows import TupleRow

from event_store.postgres import SideWrite, json_rows

# Both read %(claims)s: a JSON list of {"i": order, "u": user, "k": key}.
TRY_LOCKS = (
    "SELECT pg_try_advisory_xact_lock(hashtextextended(u || chr(31) || k, 0))"
    " FROM jsonb_to_recordset(%(claims)s::jsonb) AS t(i int, u text, k text) ORDER BY i"
)
# One primary-key probe per claim, whatever the table's size (see unit_of_work's _VOTES).
STORED_REPLIES = (
    "SELECT i.user_id, i.key, i.request_hash, i.status, i.response, i.position"
    " FROM jsonb_to_recordset(%(claims)s::jsonb) AS t(u text, k text) CROSS JOIN LATERAL ("
    "SELECT * FROM idempotency_keys WHERE user_id = t.u AND key = t.k"
    " AND created_at > now() - make_interval(secs => %(ttl)s) LIMIT 1) AS i"
)


class IdempotencyKeyInFlight(Exception):
    """Another request with this key is being processed right now."""


class IdempotencyKeyReused(Exception):
    """This key was used before with a different request."""


class StoredReply(msgspec.Struct, frozen=True):
    """A reply saved under a key (``body`` without its position)."""

    request_hash: bytes
    status: int
    body: dict[str, object]
    position: int

    def replay(self) -> bytes:
        """The reply body as first sent, position included."""
        return msgspec.json.encode({**self.body, "position": self.position})


class ReplyToStore(
    msgspec.Struct,
    frozen=True,
    # Short names in the JSON the statement reads: one document per batch, sent each time.
    rename={"user_id": "u", "key": "k", "request_hash": "h", "status": "s", "reply": "r"},
):
    """A reply to save: its position is ``head.base + ord`` when ``ord`` > 0, else ``fixed``."""

    user_id: str
    key: str
    request_hash: bytes
    status: int
    reply: msgspec.Raw
    ord: int
    fixed: int


def request_fingerprint(method: str, path: str, body: bytes) -> bytes:
    """What makes two requests 'the same' for an idempotency key."""
    return hashlib.sha256(b"%s %s\n%s" % (method.encode(), path.encode(), body)).digest()


def store_replies(replies: Sequence[ReplyToStore]) -> SideWrite:
    """A side write saving ``replies``; an expired row under the same key is overwritten."""
    return SideWrite(
        "INSERT INTO idempotency_keys (user_id, key, request_hash, status, response, position)"
        " SELECT t.u, t.k, decode(t.h, 'base64'), t.s, t.r,"
        " CASE WHEN t.ord > 0 THEN head.base + t.ord ELSE t.fixed END"
        " FROM head, jsonb_to_recordset(%(ik_rows)s::jsonb)"
        " AS t(u text, k text, h text, s int2, r jsonb, ord int, fixed int8)"
        " ON CONFLICT (user_id, key) DO UPDATE SET request_hash = excluded.request_hash,"
        " status = excluded.status, response = excluded.response,"
        " position = excluded.position, created_at = now()",
        {"ik_rows": json_rows(replies)},
    )


async def delete_expired_keys(cur: AsyncCursor[TupleRow], ttl_seconds: int) -> int:
    """Remove keys older than the TTL; return how many."""
    await cur.execute(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => %s)",
        (ttl_seconds,),
    )
    return cur.rowcount
