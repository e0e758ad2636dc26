"""``decode_chunk``: one COPY row of the rebuild's log stream, as envelopes or as entries."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import msgspec
import pytest

from event_store.bulk_read import ENTRIES, ENVELOPES, LogShape, decode_chunk, read_ahead
from schemas import codec
from schemas.codec import UnknownEventError, encode
from schemas.envelope import Envelope, LogEntry
from schemas.events import CommentPosted, VoteCast

AT = datetime(2026, 11, 27, 6, 0, 1, 123456, tzinfo=UTC)


def stored(position: int, data: dict[str, Any], version: int = 1) -> dict[str, Any]:
    """One stored event as the server writes it into a chunk of whole envelopes."""
    return {
        "position": position,
        "event_id": str(UUID(int=position)),
        "stream_id": f'stream "{position}"',
        "stream_version": 1,
        "occurred_at": AT.isoformat(),
        "correlation_id": "c" if position % 2 else None,
        "causation_id": None,
        "type": data["type"],
        "schema_version": version,
        "event": data,
    }


def entry(position: int, data: dict[str, Any], version: int = 1) -> dict[str, Any]:
    """One stored event as the server writes it into a chunk of entries (``ENTRIES``)."""
    row = stored(position, data, version)
    return {k: row[k] for k in ("position", "occurred_at", "type", "schema_version", "event")}


def as_copied(rows: list[dict[str, Any]]) -> bytes:
    """The chunk's body as COPY's text format sends it: every backslash doubled."""
    return encode(rows)[1:-1].replace(b"\\", b"\\\\")


def test_current_events_decode_with_escaped_text_and_every_envelope_field() -> None:
    comment = CommentPosted(
        comment_id=uuid4(), commentable_id="t", author_id="a", content='a \\ b "q"\n\té'
    )
    vote = VoteCast(
        comment_id=comment.comment_id, commentable_id="t", user_id="u", value=1, previous=0
    )
    rows = [stored(7, msgspec.to_builtins(comment)), stored(8, msgspec.to_builtins(vote))]
    got = decode_chunk(as_copied(rows), ENVELOPES)
    assert [e.event for e in got] == [comment, vote]
    assert got[0] == Envelope(
        event_id=UUID(int=7),
        stream_id='stream "7"',
        stream_version=1,
        position=7,
        occurred_at=AT,
        correlation_id="c",
        causation_id=None,
        event=comment,
    )
    assert got[1].correlation_id is None


def test_entries_carry_the_position_time_and_event_and_refuse_a_whole_envelope_shape() -> None:
    comment = CommentPosted(comment_id=uuid4(), commentable_id="t", author_id="a", content="\\")
    got = decode_chunk(as_copied([entry(3, msgspec.to_builtins(comment))]), ENTRIES)
    assert got == [LogEntry(position=3, occurred_at=AT, event=comment)]
    # The ids are not in an entry chunk: reading it as envelopes fails loudly, never guesses.
    with pytest.raises(msgspec.ValidationError, match="event_id"):
        decode_chunk(as_copied([entry(3, msgspec.to_builtins(comment))]), ENVELOPES)


@pytest.mark.parametrize(("shape", "row"), [(ENVELOPES, stored), (ENTRIES, entry)])
def test_an_old_event_in_a_chunk_is_upcast_by_its_stored_type_and_version(
    monkeypatch: pytest.MonkeyPatch, shape: LogShape[Any], row: Any
) -> None:
    monkeypatch.setattr(codec, "CURRENT_SCHEMA_VERSION", 2)
    monkeypatch.setitem(codec.UPCASTERS, ("VoteCast", 1), lambda raw: raw | {"user_id": "bob"})
    cid = uuid4()
    old = {"type": "VoteCast", "comment_id": str(cid), "commentable_id": "t", "voter": "bob"}
    old |= {"value": 1, "previous": 0}
    new = old | {"user_id": "ann", "schema_version": 2}
    got = decode_chunk(as_copied([row(1, old, version=1), row(2, new, version=2)]), shape)
    assert [e.position for e in got] == [1, 2] and all(e.occurred_at == AT for e in got)
    assert [(e.event.user_id, e.event.schema_version) for e in got] == [("bob", 2), ("ann", 2)]  # type: ignore[union-attr]


def test_an_unknown_type_in_a_chunk_is_an_error_not_a_skip() -> None:
    rows = [stored(1, {"type": "VoteExploded", "comment_id": str(uuid4())})]
    with pytest.raises(UnknownEventError, match="VoteExploded"):
        decode_chunk(as_copied(rows), ENVELOPES)


async def test_read_ahead_stops_and_closes_its_source_when_the_consumer_fails() -> None:
    # The reader is a batch ahead (the queue full, the next item read) when the consumer's
    # write fails: closing must stop it at once, not wait on the full queue for ever.
    closed = asyncio.Event()

    async def source() -> AsyncGenerator[int, None]:
        try:
            for n in range(100):
                yield n
        finally:
            closed.set()

    batches = read_ahead(source())
    with pytest.raises(RuntimeError, match="write failed"):
        async with contextlib.aclosing(batches):
            async for n in batches:
                await asyncio.sleep(0.01)  # the reader fills the queue meanwhile
                if n == 2:
                    raise RuntimeError("write failed")
    assert closed.is_set()


async def test_read_ahead_raises_what_its_source_raised_after_the_items_before() -> None:
    async def source() -> AsyncGenerator[int, None]:
        yield 1
        raise ValueError("bad chunk")

    got = []
    with pytest.raises(ValueError, match="bad chunk"):
        async for n in read_ahead(source()):
            got.append(n)
    assert got == [1]
