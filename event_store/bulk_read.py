"""Stream the log fast for rebuilds: chunks of envelopes as JSON, one msgspec call per chunk.

The server writes each chunk of ``CHUNK`` events as a JSON list body (the envelope as Kafka
carries it, plus the stored type and schema version), and COPY hands the chunks over whole.
Per-row work in Python (psycopg's one call per COPY row, splitting fields, building UUIDs and
datetimes one by one) was most of a rebuild's time: about 70k events/s read and parsed, against
300k to 400k this way, measured on the same 1M-event log (``docs/performance.md``).

A chunk whose events are all of the current schema decodes in one pass; any other chunk (an old
schema version to upcast, a bad field) goes event by event through ``decode_event``, which
upcasts or says what is wrong, exactly as the live path does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import msgspec
import psycopg

from schemas.codec import RawEnvelope, decode_event, envelope_of, is_current
from schemas.envelope import Envelope

CHUNK = 1000  # events per COPY row

# Every text value is JSON-escaped by the server (to_json, jsonb's output), so the only byte
# COPY's text format still escapes in a chunk is the backslash.
_ENVELOPE = """'{"position":' || position || ',"event_id":"' || event_id
    || '","stream_id":' || to_json(stream_id) || ',"stream_version":' || stream_version
    || ',"occurred_at":' || to_json(recorded_at)
    || ',"correlation_id":' || coalesce(to_json(metadata->>'correlation_id')::text, 'null')
    || ',"causation_id":' || coalesce(to_json(metadata->>'causation_id')::text, 'null')
    || ',"type":"' || type || '","schema_version":' || schema_version
    || ',"event":' || data || '}'"""

# A nested loop over the series yields the chunks in the series' order; an ORDER BY would make
# the server sort (and hold) the whole range first. ``stream_events`` checks the order.
_COPY = f"""COPY (
    SELECT chunk
    FROM generate_series(:after, least(:until, (SELECT position FROM event_head)) - 1, {CHUNK})
         AS start,
    LATERAL (
        SELECT string_agg({_ENVELOPE}, ',' ORDER BY position) AS chunk
        FROM events WHERE position > start AND position <= least(start + {CHUNK}, :until)
    ) AS c
    WHERE chunk IS NOT NULL
) TO STDOUT"""


class _StoredEnvelope(RawEnvelope, frozen=True, kw_only=True):
    type: str  # the events table's columns, which decide how the event is read
    schema_version: int


_current_chunk = msgspec.json.Decoder(list[Envelope])
_stored_chunk = msgspec.json.Decoder(list[_StoredEnvelope])


class LogOutOfOrder(RuntimeError):
    """The server handed chunks out of position order (never seen; checked, not assumed)."""


def decode_chunk(body: bytes) -> list[Envelope]:
    """One COPY row (the inside of a JSON list of stored envelopes) as envelopes, upcast."""
    body = b"[" + body.replace(b"\\\\", b"\\") + b"]"
    try:
        envelopes = _current_chunk.decode(body)
        if all(is_current(e.event) for e in envelopes):
            return envelopes
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass
    return [
        envelope_of(raw, decode_event(raw.type, raw.schema_version, raw.event))
        for raw in _stored_chunk.decode(body)
    ]


async def stream_events(
    conn: psycopg.AsyncConnection[Any], after: int, until: int, batch_size: int = 20_000
) -> AsyncIterator[list[Envelope]]:
    """Events in ``(after, until]`` in position order, in lists of ``batch_size`` (the last may
    be shorter)."""
    query = _COPY.replace(":after", str(int(after))).replace(":until", str(int(until)))
    batch: list[Envelope] = []
    last = after
    async with conn.transaction(), conn.cursor() as cur:
        # The plan's estimated cost turns JIT compilation on, which costs more than it saves.
        await cur.execute("SET LOCAL jit = off")
        async with cur.copy(query) as copy:
            async for row in copy:
                chunk = decode_chunk(bytes(row).removesuffix(b"\n"))
                if chunk[0].position <= last:
                    raise LogOutOfOrder(f"position {chunk[0].position} came after {last}")
                last = chunk[-1].position
                batch.extend(chunk)
                while len(batch) >= batch_size:
                    yield batch[:batch_size]
                    batch = batch[batch_size:]
    if batch:
        yield batch


T = TypeVar("T")


async def read_ahead(source: AsyncIterator[T], depth: int = 1) -> AsyncIterator[T]:
    """``source``, with up to ``depth`` items read ahead while the consumer works on one.

    Parsing the next batch then overlaps with writing the last one to a projection's store.
    """
    queue: asyncio.Queue[tuple[bool, T | None]] = asyncio.Queue(depth)

    async def fill() -> None:
        try:
            async for item in source:
                await queue.put((True, item))
        finally:
            await queue.put((False, None))

    task = asyncio.create_task(fill())
    try:
        while True:
            more, item = await queue.get()
            if not more:
                break
            yield item  # type: ignore[misc]
        await task  # raises what the reader raised
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
