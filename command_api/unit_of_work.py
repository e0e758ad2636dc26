"""Run a batch of commands in one PostgreSQL transaction, in two round trips.

1. Read (one message): BEGIN, claim idempotency keys, take the batch's stream locks, then load
   the comments and vote rows it touches. Concurrent batches on one stream serialize on those
   locks; the unique (stream_id, stream_version) constraint is the safety net behind them.
2. Decide in Python (``planning``), then one message with the statement that takes the log head
   lock and writes events, outbox, state rows and idempotency replies, followed by COMMIT.

Parameters are bound client-side (``AsyncClientCursor``) so several statements fit in one
message; every value still goes through psycopg's quoting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple
from uuid import UUID

import msgspec
from psycopg import AsyncClientCursor, AsyncConnection
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

from command_api import idempotency
from command_api.deciders.comment import CommentState, DeleteComment, EditComment, PostComment
from command_api.deciders.errors import DomainError
from command_api.deciders.vote import CastVote, RetractVote
from command_api.idempotency import (
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    ReplyToStore,
    StoredReply,
)
from command_api.planning import BatchPlan, CommandPlan, VoteKey, plan_batch
from command_api.work import Accepted, Outcome, WorkItem
from event_store.errors import CommitOutcomeUnknown
from event_store.port import stream_of_comment, stream_of_vote
from event_store.postgres import SideWrite, append_and_commit, json_rows
from schemas.api import CommentCreated
from schemas.codec import encode

# Transaction-scoped advisory locks, not row locks: a row lock writes the row (and WAL, and a
# MultiXact when two batches share-lock one popular comment), and a vote row had to be inserted
# just to be locked. A comment is locked shared to vote on or reply to it, exclusive to edit or
# delete it; a vote stream exclusive. Every batch takes its locks in one order (comments, then
# votes, each by hash) so batches never deadlock on them; a hash collision only makes two
# unrelated streams wait for each other.
_LOCK_STREAMS = (
    "SELECT CASE WHEN t.x THEN pg_advisory_xact_lock(t.ns, t.h)"
    " ELSE pg_advisory_xact_lock_shared(t.ns, t.h) END FROM ("
    " SELECT 1 AS ns, hashtext(c) AS h, bool_or(x) AS x"
    " FROM jsonb_to_recordset(%(comments)s::jsonb) AS r(c text, x bool) GROUP BY 2"
    " UNION ALL SELECT 2, hashtext(c || chr(31) || u), true"
    " FROM jsonb_to_recordset(%(votes)s::jsonb) AS r(c text, u text) GROUP BY 2"
    " ORDER BY 1, 2) AS t"
)
# Separate statements from the locks: each takes its snapshot after the locks are granted, so
# it sees what the batch that held them committed. Both probe the primary key once per key of
# the batch, whatever the table's size: an array for the comments, and for the votes a LATERAL
# subquery that its LIMIT keeps from being flattened. As a plain join (or ``IN (SELECT ...)``)
# the planner, which guesses 100 rows for any set-returning function, hashed the batch's keys
# and scanned the whole table while it was small, up to tens of thousands of rows: 5-6 ms of a
# batch's read at 20,000 vote rows, against 0.1-0.4 ms for the probes.
_COMMENTS = (
    "SELECT comment_id, commentable_id, author_id, content, deleted, version, position,"
    " parent_id, depth FROM comments WHERE comment_id = ANY(%s)"
)
_VOTES = (
    "SELECT v.comment_id, v.user_id, v.value, v.version, v.position"
    " FROM jsonb_to_recordset(%s::jsonb) AS t(c uuid, u text) CROSS JOIN LATERAL ("
    "SELECT * FROM votes WHERE comment_id = t.c AND user_id = t.u LIMIT 1) AS v"
)


class Reply(NamedTuple):
    """The answer a command of the batch will get: its position is ``base + ord`` once the
    batch's events are in (``ord`` > 0), or ``fixed`` (a command that appended nothing)."""

    item: int  # which item of the batch
    status: int
    planned: CommandPlan
    ord: int
    fixed: int


async def run_batch(
    conn: AsyncConnection[Any], items: Sequence[WorkItem], idempotency_ttl: int
) -> list[Outcome]:
    """Carry out ``items`` in one transaction; one outcome per item, in order."""
    if not conn.autocommit:
        raise ValueError("run_batch manages its own transaction: use an autocommit connection")
    outcomes: list[Outcome | None] = [None] * len(items)
    cur = AsyncClientCursor(conn)
    try:
        loaded = await _Loaded.fetch(cur, items, idempotency_ttl)
        active = loaded.settle_idempotency(items, outcomes)
        now = datetime.now(UTC)
        plan = plan_batch(
            [items[i].command for i in active],
            loaded.comments,
            loaded.votes,
            now,
            [items[i].origin for i in active],
        )
        writer = _Writer(plan, loaded.positions)
        replies: list[Reply] = []
        for index, planned in zip(active, plan.outcomes, strict=True):
            if isinstance(planned, DomainError):
                outcomes[index] = planned
                continue
            status = 201 if isinstance(planned.reply, CommentCreated) else 200
            replies.append(Reply(index, status, planned, *writer.position_of(planned)))
        to_store = [
            ReplyToStore(
                user_id=items[r.item].user_id,
                key=items[r.item].idempotency_key or "",
                request_hash=items[r.item].request_hash,
                status=r.status,
                reply=msgspec.Raw(encode(r.planned.reply)),
                ord=r.ord,
                fixed=r.fixed,
            )
            for r in replies
            if items[r.item].idempotency_key
        ]
        side_writes = writer.state_writes(now)
        if to_store:
            side_writes.append(idempotency.store_replies(to_store))

        def answers(base: int) -> list[Outcome]:
            """Every item's outcome once the batch committed with positions after ``base``."""
            for r in replies:
                position = base + r.ord if r.ord else r.fixed
                reply = msgspec.structs.replace(r.planned.reply, position=position)
                outcomes[r.item] = Accepted(r.status, encode(reply), position=position)
            return [o if o is not None else RuntimeError("command not processed") for o in outcomes]

        try:
            # The events carry the time the replies and the comment rows were given.
            positions = await append_and_commit(cur, writer.pending, side_writes, now)
        except CommitOutcomeUnknown as exc:
            first = writer.pending[0].event_id if writer.pending else None
            raise BatchOutcomeUnknown(str(exc), first, answers) from exc
    except BaseException:
        if conn.info.transaction_status != TransactionStatus.IDLE and not conn.closed:
            await conn.execute("ROLLBACK")
        raise
    finally:
        await cur.close()
    return answers(positions[0] - 1 if positions else 0)


class BatchOutcomeUnknown(CommitOutcomeUnknown):
    """The connection broke during the batch's COMMIT.

    ``first_event`` (the id of the batch's first event, if it appended any) tells whether it
    committed; if it did, ``answers(base)`` gives every item's outcome from the position
    before that event.
    """

    def __init__(
        self, message: str, first_event: UUID | None, answers: Callable[[int], list[Outcome]]
    ) -> None:
        super().__init__(message)
        self.first_event = first_event
        self.answers = answers


class _Loaded:
    """Everything the read round trip returned."""

    def __init__(self) -> None:
        self.won: list[bool] = []
        self.stored: dict[tuple[str, str], StoredReply] = {}
        self.comments: dict[UUID, CommentState] = {}
        self.votes: dict[VoteKey, tuple[int, int]] = {}
        self.positions: dict[str, int] = {}

    @classmethod
    async def fetch(
        cls, cur: AsyncClientCursor[TupleRow], items: Sequence[WorkItem], ttl: int
    ) -> _Loaded:
        """BEGIN and every read of the batch in one message; then collect the results."""
        loaded = cls()
        commands = [item.command for item in items]
        keyed = [
            {"i": n, "u": item.user_id, "k": item.idempotency_key}
            for n, item in enumerate(items)
            if item.idempotency_key
        ]
        key_params = {"claims": json_rows(keyed), "ttl": ttl}
        to_change = {c.comment_id for c in commands if isinstance(c, EditComment | DeleteComment)}
        to_read = {c.comment_id for c in commands if isinstance(c, CastVote | RetractVote)}
        to_read |= {c.parent_id for c in commands if isinstance(c, PostComment) and c.parent_id}
        vote_keys = sorted(
            {(c.comment_id, c.user_id) for c in commands if isinstance(c, CastVote | RetractVote)}
        )
        stream_locks = {
            "comments": json_rows(
                [{"c": c, "x": True} for c in sorted(to_change)]
                + [{"c": c, "x": False} for c in sorted(to_read - to_change)]
            ),
            "votes": json_rows([{"c": c, "u": u} for c, u in vote_keys]),
        }
        to_load = to_change | to_read
        statements = ["BEGIN"]
        sent: dict[str, list[Any]] = {}
        for name, sql, params, wanted in (
            ("locks", idempotency.TRY_LOCKS, key_params, keyed),
            ("stored", idempotency.STORED_REPLIES, key_params, keyed),
            ("streams", _LOCK_STREAMS, stream_locks, to_load),
            ("comments", _COMMENTS, (sorted(to_load),), to_load),
            ("votes", _VOTES, (stream_locks["votes"],), vote_keys),
        ):
            if wanted:
                statements.append(cur.mogrify(sql, params))
                sent[name] = []
        await cur.execute(";\n".join(statements))
        for name in sent:
            cur.nextset()
            sent[name] = await cur.fetchall()
        if "locks" in sent:
            loaded.won = [bool(r[0]) for r in sent["locks"]]
            for r in sent["stored"]:
                loaded.stored[(r[0], r[1])] = StoredReply(bytes(r[2]), r[3], r[4], r[5])
        for r in sent.get("comments", []):
            loaded.comments[r[0]] = CommentState(
                exists=True,
                commentable_id=r[1],
                author_id=r[2],
                content=r[3],
                deleted=r[4],
                version=r[5],
                parent_id=r[7],
                depth=r[8],
            )
            loaded.positions[stream_of_comment(r[0])] = r[6]
        for r in sent.get("votes", []):
            loaded.votes[(r[0], r[1])] = (r[2], r[3])
            loaded.positions[stream_of_vote(r[0], r[1])] = r[4]
        return loaded

    def settle_idempotency(
        self, items: Sequence[WorkItem], outcomes: list[Outcome | None]
    ) -> list[int]:
        """Answer replays and key conflicts; return the indices of items still to execute."""
        keyed = [i for i, item in enumerate(items) if item.idempotency_key]
        seen: set[tuple[str, str]] = set()
        for index, got_lock in zip(keyed, self.won, strict=True):
            item = items[index]
            claim = (item.user_id, item.idempotency_key or "")
            previous = self.stored.get(claim)
            if not got_lock or claim in seen:
                outcomes[index] = IdempotencyKeyInFlight(
                    f"a request with Idempotency-Key {claim[1]!r} is still in progress"
                )
            elif previous is not None and previous.request_hash != item.request_hash:
                outcomes[index] = IdempotencyKeyReused(
                    f"Idempotency-Key {claim[1]!r} was already used with a different request"
                )
            elif previous is not None:
                outcomes[index] = Accepted(
                    previous.status, previous.replay(), replayed=True, position=previous.position
                )
            seen.add(claim)
        return [i for i in range(len(items)) if outcomes[i] is None]


class _Writer:
    """Lays out the batch's events and where each command's and stream's position comes from.

    A position is ``head.base + ord`` for the ``ord``-th event of the batch (known only once the
    write statement ran), or a fixed position already in the log.
    """

    def __init__(self, plan: BatchPlan, positions: dict[str, int]) -> None:
        self.plan = plan
        self.pending = [e for p in plan.outcomes if isinstance(p, CommandPlan) for e in p.events]
        self.last_ord: dict[str, int] = {}
        for ord_, event in enumerate(self.pending, start=1):
            self.last_ord[event.stream_id] = ord_
        self._ord_of_command: dict[int, int] = {}
        ord_ = 0
        for planned in plan.outcomes:
            if isinstance(planned, CommandPlan) and planned.events:
                ord_ += len(planned.events)
                self._ord_of_command[id(planned)] = ord_
        self._seen_ord: dict[str, int] = {}
        self._fixed = positions

    def position_of(self, planned: CommandPlan) -> tuple[int, int]:
        """(ord, fixed) of the command's answer; call in batch order."""
        own = self._ord_of_command.get(id(planned))
        if own is not None:
            self._seen_ord[planned.stream] = own
            return own, 0
        earlier = self._seen_ord.get(planned.stream)
        if earlier is not None:
            return earlier, 0
        return 0, self._fixed.get(planned.stream, 0)

    def state_writes(self, now: datetime) -> list[SideWrite]:
        """Save the comments and votes the batch changed."""
        writes = []
        votes = self.plan.votes
        if votes:
            rows = [
                {
                    "c": c,
                    "u": u,
                    "v": state.value,
                    "n": state.version,
                    "o": self.last_ord[stream_of_vote(c, u)],
                }
                for (c, u), state in votes.items()
            ]
            writes.append(
                SideWrite(
                    "INSERT INTO votes (comment_id, user_id, value, version, position)"
                    " SELECT t.c, t.u, t.v, t.n, head.base + t.o"
                    " FROM head, jsonb_to_recordset(%(v_rows)s::jsonb)"
                    " AS t(c uuid, u text, v int2, n int, o int)"
                    " ON CONFLICT (comment_id, user_id) DO UPDATE SET value = excluded.value,"
                    " version = excluded.version, position = excluded.position",
                    {"v_rows": json_rows(rows)},
                )
            )
        if self.plan.comments:
            writes.append(self._save_comments(now))
        return writes

    def _save_comments(self, now: datetime) -> SideWrite:
        rows = [
            {
                "id": comment_id,
                "commentable": state.commentable_id,
                "author": state.author_id,
                "parent": state.parent_id,
                "depth": state.depth,
                "content": state.content,
                "deleted": state.deleted,
                "version": state.version,
                "ord": self.last_ord[stream_of_comment(comment_id)],
            }
            for comment_id, state in self.plan.comments.items()
        ]
        return SideWrite(
            "INSERT INTO comments (comment_id, commentable_id, author_id, parent_id, depth,"
            " content, deleted, version, position, created_at, updated_at)"
            " SELECT t.id, t.commentable, t.author, t.parent, t.depth, t.content, t.deleted,"
            " t.version, head.base + t.ord, %(c_now)s, %(c_now)s FROM head,"
            " jsonb_to_recordset(%(c_rows)s::jsonb) AS t(id uuid, commentable text, author text,"
            " parent uuid, depth int, content text, deleted bool, version int, ord int)"
            " ON CONFLICT (comment_id) DO UPDATE SET content = excluded.content,"
            " deleted = excluded.deleted, version = excluded.version,"
            " position = excluded.position, updated_at = excluded.updated_at",
            {"c_rows": json_rows(rows), "c_now": now},
        )
