"""The write side on the in-memory event store: the same planning, idempotency and answers as
the PostgreSQL unit of work, one command at a time. For unit tests of the HTTP layer."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

import msgspec

from command_api.deciders.comment import CommentState
from command_api.deciders.errors import DomainError
from command_api.idempotency import IdempotencyKeyReused
from command_api.planning import VoteKey, plan_batch
from command_api.work import Accepted, Outcome, WorkItem
from event_store.memory import InMemoryEventStore
from schemas.api import CommentCreated
from schemas.codec import encode


class InMemoryCommands:
    """Runs work items against an ``InMemoryEventStore`` (a ``BatchRunner``)."""

    def __init__(self, store: InMemoryEventStore | None = None) -> None:
        self.store = store or InMemoryEventStore()
        self.comments: dict[UUID, CommentState] = {}
        self.votes: dict[VoteKey, tuple[int, int]] = {}
        self.replies: dict[tuple[str, str], tuple[bytes, Accepted]] = {}

    async def run(self, items: Sequence[WorkItem]) -> list[Outcome]:
        """One outcome per item, in order."""
        return [await self._one(item) for item in items]

    async def _one(self, item: WorkItem) -> Outcome:
        claim = (item.user_id, item.idempotency_key or "")
        if item.idempotency_key and claim in self.replies:
            fingerprint, reply = self.replies[claim]
            if fingerprint != item.request_hash:
                return IdempotencyKeyReused(
                    f"Idempotency-Key {claim[1]!r} was already used with a different request"
                )
            return msgspec.structs.replace(reply, replayed=True)
        plan = plan_batch(
            [item.command], self.comments, self.votes, datetime.now(UTC), [item.origin]
        )
        planned = plan.outcomes[0]
        if isinstance(planned, DomainError):
            return planned
        if planned.events:
            position = (await self.store.append_pending(planned.events))[-1]
        else:
            position = self.store.last_position(planned.stream)
        self.comments.update(plan.comments)
        self.votes.update({key: (v.value, v.version) for key, v in plan.votes.items()})
        status = 201 if isinstance(planned.reply, CommentCreated) else 200
        body = encode(msgspec.structs.replace(planned.reply, position=position))
        reply = Accepted(status, body, position=position)
        if item.idempotency_key:
            self.replies[claim] = (item.request_hash, reply)
        return reply
