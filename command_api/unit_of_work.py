"""Run a batch of commands in one PostgreSQL transaction: claim, load, decide, save, append.

Every row a command decides on is locked first (comments FOR UPDATE or FOR SHARE, vote rows
upserted and so locked), so concurrent batches on the same stream serialize their decisions;
the unique (stream_id, stream_version) constraint is the safety net behind that.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import TupleRow

from command_api.deciders.comment import CommentState, DeleteComment, EditComment, PostComment
from command_api.deciders.errors import DomainError
from command_api.deciders.vote import CastVote, RetractVote
from command_api.idempotency import (
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    claim_keys,
    store_replies,
)
from command_api.planning import BatchPlan, Command, CommandPlan, VoteKey, plan_batch
from event_store.postgres import append_pending
from schemas.api import CommentCreated
from schemas.codec import encode


class WorkItem(msgspec.Struct, frozen=True, kw_only=True):
    """A command with the request facts the write path needs."""

    command: Command
    user_id: str
    idempotency_key: str | None = None
    request_hash: bytes = b""
    correlation_id: str | None = None


class Accepted(msgspec.Struct, frozen=True):
    """The reply to a command that succeeded (or was replayed from its idempotency key)."""

    status: int
    body: bytes
    replayed: bool = False


Outcome = Accepted | Exception


async def run_batch(
    conn: AsyncConnection[Any], items: Sequence[WorkItem], idempotency_ttl: int
) -> list[Outcome]:
    """Carry out ``items`` in one transaction; one outcome per item, in order."""
    outcomes: list[Outcome | None] = [None] * len(items)
    async with conn.transaction(), conn.cursor() as cur:
        active = await _claim_idempotency_keys(cur, items, outcomes, idempotency_ttl)
        commands = [items[i].command for i in active]
        comments = await _load_comments(cur, commands)
        votes = await _lock_votes(cur, commands, comments)
        now = datetime.now(UTC)
        plan = plan_batch(commands, comments, votes, now, [items[i].correlation_id for i in active])
        await _save_comments(cur, plan, now)
        await _save_votes(cur, plan)
        noop_positions = await _noop_positions(cur, plan)
        pending = [e for p in plan.outcomes if isinstance(p, CommandPlan) for e in p.events]
        positions = iter(await append_pending(cur, pending))
        to_store = []
        for index, planned in zip(active, plan.outcomes, strict=True):
            if isinstance(planned, DomainError):
                outcomes[index] = planned
                continue
            own = [next(positions) for _ in planned.events]
            position = own[-1] if own else noop_positions.get(planned.noop_stream, 0)
            reply = msgspec.structs.replace(planned.reply, position=position)
            accepted = Accepted(201 if isinstance(reply, CommentCreated) else 200, encode(reply))
            outcomes[index] = accepted
            item = items[index]
            if item.idempotency_key:
                to_store.append(
                    (
                        item.user_id,
                        item.idempotency_key,
                        item.request_hash,
                        accepted.status,
                        accepted.body,
                    )
                )
        await store_replies(cur, to_store)
    return [o if o is not None else RuntimeError("command was not processed") for o in outcomes]


async def _claim_idempotency_keys(
    cur: AsyncCursor[TupleRow], items: Sequence[WorkItem], outcomes: list[Outcome | None], ttl: int
) -> list[int]:
    """Settle replays and key conflicts; return the indices of items still to execute."""
    keyed = [i for i, item in enumerate(items) if item.idempotency_key]
    if not keyed:
        return list(range(len(items)))
    claims = [(items[i].user_id, items[i].idempotency_key or "") for i in keyed]
    won, stored = await claim_keys(cur, claims, ttl)
    seen: set[tuple[str, str]] = set()
    for index, claim, got_lock in zip(keyed, claims, won, strict=True):
        previous = stored.get(claim)
        if not got_lock or claim in seen:
            outcomes[index] = IdempotencyKeyInFlight(
                f"a request with Idempotency-Key {claim[1]!r} is still in progress"
            )
        elif previous is not None and previous.request_hash != items[index].request_hash:
            outcomes[index] = IdempotencyKeyReused(
                f"Idempotency-Key {claim[1]!r} was already used with a different request"
            )
        elif previous is not None:
            outcomes[index] = Accepted(previous.status, previous.body, replayed=True)
        seen.add(claim)
    return [i for i in range(len(items)) if outcomes[i] is None]


_COMMENT_COLUMNS = "comment_id, commentable_id, author_id, content, deleted, version"


async def _load_comments(
    cur: AsyncCursor[TupleRow], commands: Sequence[Command]
) -> dict[UUID, CommentState]:
    """Lock and load the comments the batch touches: FOR UPDATE to change, FOR SHARE to read."""
    to_change = sorted(
        {c.comment_id for c in commands if isinstance(c, EditComment | DeleteComment)}
    )
    to_read = {c.comment_id for c in commands if isinstance(c, CastVote | RetractVote)}
    to_read |= {c.parent_id for c in commands if isinstance(c, PostComment) and c.parent_id}
    to_read -= set(to_change)
    states: dict[UUID, CommentState] = {}
    for ids, lock in ((to_change, "UPDATE"), (sorted(to_read), "SHARE")):
        if not ids:
            continue
        await cur.execute(
            f"SELECT {_COMMENT_COLUMNS} FROM comments WHERE comment_id = ANY(%s)"
            f" ORDER BY comment_id FOR {lock}",
            (ids,),
        )
        for row in await cur.fetchall():
            states[row[0]] = CommentState(
                exists=True,
                commentable_id=row[1],
                author_id=row[2],
                content=row[3],
                deleted=row[4],
                version=row[5],
            )
    return states


async def _lock_votes(
    cur: AsyncCursor[TupleRow], commands: Sequence[Command], comments: dict[UUID, CommentState]
) -> dict[VoteKey, tuple[int, int]]:
    """Upsert (and so lock) the vote row of every live vote stream; return (value, version)."""
    keys = sorted(
        {
            (c.comment_id, c.user_id)
            for c in commands
            if isinstance(c, CastVote | RetractVote)
            and c.comment_id in comments
            and not comments[c.comment_id].deleted
        }
    )
    if not keys:
        return {}
    await cur.execute(
        "INSERT INTO votes (comment_id, user_id)"
        " SELECT * FROM unnest(%s::uuid[], %s::text[])"
        " ON CONFLICT (comment_id, user_id) DO UPDATE SET value = votes.value"
        " RETURNING comment_id, user_id, value, version",
        ([k[0] for k in keys], [k[1] for k in keys]),
    )
    return {(r[0], r[1]): (int(r[2]), int(r[3])) for r in await cur.fetchall() if r[3]}


async def _save_comments(cur: AsyncCursor[TupleRow], plan: BatchPlan, now: datetime) -> None:
    if not plan.comments:
        return
    rows = [
        (
            comment_id,
            state.commentable_id,
            state.author_id,
            post.parent_id if (post := plan.new_comments.get(comment_id)) else None,
            state.content,
            state.deleted,
            state.version,
        )
        for comment_id, state in plan.comments.items()
    ]
    columns = [list(c) for c in zip(*rows, strict=True)]
    await cur.execute(
        "INSERT INTO comments (comment_id, commentable_id, author_id, parent_id, content,"
        " deleted, version, created_at, updated_at)"
        " SELECT *, %s, %s FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::uuid[],"
        " %s::text[], %s::bool[], %s::int[])"
        " ON CONFLICT (comment_id) DO UPDATE SET content = excluded.content,"
        " deleted = excluded.deleted, version = excluded.version, updated_at = excluded.updated_at",
        [now, now, *columns],
    )


async def _save_votes(cur: AsyncCursor[TupleRow], plan: BatchPlan) -> None:
    if not plan.votes:
        return
    keys = list(plan.votes)
    await cur.execute(
        "UPDATE votes v SET value = t.value, version = t.version"
        " FROM unnest(%s::uuid[], %s::text[], %s::int2[], %s::int[])"
        " AS t(comment_id, user_id, value, version)"
        " WHERE v.comment_id = t.comment_id AND v.user_id = t.user_id",
        (
            [k[0] for k in keys],
            [k[1] for k in keys],
            [plan.votes[k].value for k in keys],
            [plan.votes[k].version for k in keys],
        ),
    )


async def _noop_positions(cur: AsyncCursor[TupleRow], plan: BatchPlan) -> dict[Any, int]:
    """Position of the latest event of every stream a command left unchanged."""
    streams = {p.noop_stream for p in plan.outcomes if isinstance(p, CommandPlan) and p.noop_stream}
    if not streams:
        return {}
    await cur.execute(
        "SELECT e.stream_id, e.stream_version, e.position FROM events e"
        " JOIN unnest(%s::text[], %s::int[]) AS t(s, v)"
        " ON e.stream_id = t.s AND e.stream_version = t.v",
        ([s for s, _ in streams], [v for _, v in streams]),
    )
    return {(r[0], r[1]): int(r[2]) for r in await cur.fetchall()}
