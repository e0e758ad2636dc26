"""``tally seed``: write a realistic history straight into the store with COPY (not HTTP).

Comments over ``commentables``, votes by ``users`` with Zipf-like popularity (a few comments get
most votes), including changes and retractions, timestamps spread over ``days``. Deterministic
for a given ``seed``. Events, their outbox rows and the write-side state (comments, votes) are
written in one transaction, after the current head, so the relay and projectors pick them up
and the command API keeps working on the seeded comments.
"""

from __future__ import annotations

import functools
import random
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from event_store.port import PendingEvent
from schemas.events import CommentPosted, Event, VoteCast, VoteChanged, VoteRetracted

# Comment text: words drawn Zipf-like (a few are in most comments, most in few) from common
# English and Russian words (seed_words.txt) and a long tail of rarer ones, so that searches
# over seeded comments are as selective as real ones.
_TAIL = 5000


@functools.cache
def vocabulary() -> tuple[list[str], list[float]]:
    """The words of seeded comments, most common first, and their cumulative weights."""
    common = (Path(__file__).parent / "seed_words.txt").read_text().split()
    words = common + [f"{'term' if n % 2 else 'slovo'}{n}" for n in range(_TAIL)]
    return words, list(accumulate(1 / (rank + 1) for rank in range(len(words))))


def comment_text(rng: random.Random) -> str:
    """A comment of 4 to 24 words."""
    words, weights = vocabulary()
    return " ".join(rng.choices(words, cum_weights=weights, k=rng.randint(4, 24)))


class SeedPlan(msgspec.Struct, frozen=True, kw_only=True):
    events: int = 20_000
    commentables: int = 20
    comments: int = 1_000
    users: int = 5_000
    days: int = 7
    seed: int = 1


def history(plan: SeedPlan) -> Iterator[PendingEvent]:
    """Posts first, then votes (cast, changed, retracted) until ``plan.events`` events."""
    rng = random.Random(plan.seed)
    count = min(plan.comments, plan.events)
    ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(count)]
    where = {c: f"topic-{n % plan.commentables}" for n, c in enumerate(ids)}
    author = {c: f"user-{rng.randrange(plan.users)}" for c in ids}
    for comment_id in ids:
        yield PendingEvent(
            stream_id=f"comment-{comment_id}",
            stream_version=1,
            event=CommentPosted(
                comment_id=comment_id,
                commentable_id=where[comment_id],
                author_id=author[comment_id],
                content=comment_text(rng),
            ),
        )
    popularity = list(accumulate(1 / (rank + 1) ** 0.9 for rank in range(count)))
    picks = rng.choices(ids, cum_weights=popularity, k=plan.events - count)
    voters = [f"user-{n}" for n in range(plan.users)]
    current: dict[tuple[uuid.UUID, str], tuple[Any, int]] = {}
    for comment_id in picks:
        user = voters[rng.randrange(plan.users)]
        value, version = current.get((comment_id, user), (0, 0))
        new: Any = rng.choice([v for v in (-1, 0, 1) if v != value] if value else [1, 1, 1, -1])
        kind: type[VoteCast | VoteChanged | VoteRetracted] = (
            VoteCast if value == 0 else VoteRetracted if new == 0 else VoteChanged
        )
        current[(comment_id, user)] = (new, version + 1)
        yield PendingEvent(
            stream_id=f"vote-{comment_id}-{user}",
            stream_version=version + 1,
            event=kind(
                comment_id=comment_id,
                commentable_id=where[comment_id],
                comment_author_id=author[comment_id],
                user_id=user,
                value=new,
                previous=value,
            ),
        )


async def seed(
    dsn: str, plan: SeedPlan, outbox: bool = True, progress: Callable[[int], None] | None = None
) -> tuple[int, int]:
    """Append the plan's history after the head; return (first, last) position written."""
    encoder = msgspec.json.Encoder()
    start = datetime.now(UTC) - timedelta(days=plan.days)
    step = timedelta(days=plan.days) / max(1, plan.events)
    comments: dict[uuid.UUID, tuple[Event, int, datetime]] = {}
    votes: dict[tuple[uuid.UUID, str], tuple[int, int, int]] = {}
    async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.transaction():
        cur = await conn.execute(
            "UPDATE event_head SET position = position + %s RETURNING position - %s",
            (plan.events, plan.events),
        )
        row = await cur.fetchone()
        base = int(row[0]) if row else 0
        written = 0
        async with conn.cursor().copy(
            "COPY events (position, event_id, stream_id, stream_version, type, schema_version,"
            " data, metadata, recorded_at) FROM STDIN"
        ) as copy:
            for n, pending in enumerate(history(plan), start=1):
                event, at = pending.event, start + step * n
                await copy.write_row(
                    (
                        base + n,
                        uuid.uuid4(),
                        pending.stream_id,
                        pending.stream_version,
                        type(event).__name__,
                        event.schema_version,
                        encoder.encode(event).decode(),
                        '{"correlation_id": "seed"}',
                        at,
                    )
                )
                if isinstance(event, CommentPosted):
                    comments[event.comment_id] = (event, base + n, at)
                elif isinstance(event, VoteCast | VoteChanged | VoteRetracted):
                    key = (event.comment_id, event.user_id)
                    votes[key] = (event.value, pending.stream_version, base + n)
                written = n
                if progress and n % 50_000 == 0:
                    progress(n)
        if written != plan.events:  # fewer comments than asked: give the unused positions back
            await conn.execute("UPDATE event_head SET position = %s", (base + written,))
        if outbox:
            await conn.execute(
                "INSERT INTO outbox (position, key)"
                " SELECT position, data->>'comment_id' FROM events WHERE position > %s",
                (base,),
            )
        async with conn.cursor().copy(
            "COPY comments (comment_id, commentable_id, author_id, parent_id, content, deleted,"
            " version, position, created_at, updated_at) FROM STDIN"
        ) as copy:
            for comment_id, (posted, position, at) in comments.items():
                assert isinstance(posted, CommentPosted)
                await copy.write_row(
                    (
                        comment_id,
                        posted.commentable_id,
                        posted.author_id,
                        None,
                        posted.content,
                        False,
                        1,
                        position,
                        at,
                        at,
                    )
                )
        async with conn.cursor().copy(
            "COPY votes (comment_id, user_id, value, version, position) FROM STDIN"
        ) as copy:
            for (comment_id, user), (value, version, position) in votes.items():
                await copy.write_row((comment_id, user, value, version, position))
    return base + 1, base + written
