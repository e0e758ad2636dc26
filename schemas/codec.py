"""Encode and decode events; upcast older schema versions on read.

An unknown type or version is an ``UnknownEventError``, never a silent skip.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from schemas.envelope import Envelope
from schemas.events import CURRENT_SCHEMA_VERSION, EVENT_TYPES, Event

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

# (type, from_version) -> function turning that version's dict into the next version's.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


class RawEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """An envelope whose event is still JSON: what the relay publishes, what consumers read."""

    event_id: str
    stream_id: str
    stream_version: int
    position: int
    occurred_at: str
    correlation_id: str | None = None
    causation_id: str | None = None
    event: msgspec.Raw


class _EventHeader(msgspec.Struct):
    type: str
    schema_version: int = 1


_event_decoder = msgspec.json.Decoder(Event)
_envelope_decoder = msgspec.json.Decoder(Envelope)
_raw_envelope_decoder = msgspec.json.Decoder(RawEnvelope)
_header_decoder = msgspec.json.Decoder(_EventHeader)
_encoder = msgspec.json.Encoder()


class UnknownEventError(ValueError):
    """An event whose type or schema version this code cannot read."""


def encode(value: object) -> bytes:
    """JSON-encode an event, envelope or API body."""
    return _encoder.encode(value)


def is_current(event: Event) -> bool:
    """Whether ``event`` has the schema version this code writes: nothing to upcast."""
    return event.schema_version == CURRENT_SCHEMA_VERSION


def decode_event(type_name: str, schema_version: int, data: bytes | str) -> Event:
    """Decode a stored event, upcasting it first if it has an older schema version."""
    if type_name not in EVENT_TYPES:
        raise UnknownEventError(f"unknown event type {type_name!r}")
    if schema_version == CURRENT_SCHEMA_VERSION:
        try:
            event: Event = _event_decoder.decode(data)
            return event
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise UnknownEventError(f"{type_name} v{schema_version}: {exc}") from exc
    upcasted: Event = msgspec.convert(
        upcast(type_name, schema_version, msgspec.json.decode(data)), Event
    )
    return upcasted


def upcast(type_name: str, schema_version: int, raw: dict[str, Any]) -> dict[str, Any]:
    """Apply upcasters until the dict is at the current schema version."""
    if schema_version > CURRENT_SCHEMA_VERSION or schema_version < 1:
        raise UnknownEventError(f"{type_name} has unknown schema version {schema_version}")
    version = schema_version
    while version < CURRENT_SCHEMA_VERSION:
        step = UPCASTERS.get((type_name, version))
        if step is None:
            raise UnknownEventError(f"no upcaster for {type_name} v{version}")
        raw = step(raw)
        version += 1
    raw["schema_version"] = CURRENT_SCHEMA_VERSION
    raw["type"] = type_name
    return raw


def decode_envelope(data: bytes) -> Envelope:
    """Decode a JSON envelope (as published to Kafka), upcasting its event if it is old."""
    # One pass for an event of the current schema (nearly all of them); anything else (an old
    # version, an unknown type, a bad field) takes the careful path, which upcasts or says why.
    try:
        envelope: Envelope = _envelope_decoder.decode(data)
        if is_current(envelope.event):
            return envelope
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass
    try:
        raw = _raw_envelope_decoder.decode(data)
        header = _header_decoder.decode(raw.event)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise UnknownEventError(f"undecodable envelope: {exc}") from exc
    return envelope_of(raw, decode_event(header.type, header.schema_version, raw.event))


def envelope_of(raw: RawEnvelope, event: Event) -> Envelope:
    """``raw`` with its fields checked and ``event`` (already decoded and upcast) inside."""
    try:
        return Envelope(
            event_id=msgspec.convert(raw.event_id, UUID),
            stream_id=raw.stream_id,
            stream_version=raw.stream_version,
            position=raw.position,
            occurred_at=msgspec.convert(raw.occurred_at, datetime),
            correlation_id=raw.correlation_id,
            causation_id=raw.causation_id,
            event=event,
        )
    except msgspec.ValidationError as exc:
        raise UnknownEventError(f"bad envelope: {exc}") from exc
