"""Encode and decode events; upcast older schema versions on read.

An unknown type or version is an ``UnknownEventError``, never a silent skip.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from schemas.envelope import Envelope
from schemas.events import CURRENT_SCHEMA_VERSION, EVENT_TYPES, Event

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

# (type, from_version) -> function turning that version's dict into the next version's.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}

_event_decoder = msgspec.json.Decoder(Event)
_envelope_decoder = msgspec.json.Decoder(Envelope)
_encoder = msgspec.json.Encoder()


class UnknownEventError(ValueError):
    """An event whose type or schema version this code cannot read."""


def encode(value: object) -> bytes:
    """JSON-encode an event, envelope or API body."""
    return _encoder.encode(value)


def decode_event(type_name: str, schema_version: int, data: bytes | str) -> Event:
    """Decode a stored event, upcasting it first if it has an older schema version."""
    if type_name not in EVENT_TYPES:
        raise UnknownEventError(f"unknown event type {type_name!r}")
    if schema_version == CURRENT_SCHEMA_VERSION:
        try:
            event: Event = _event_decoder.decode(data)
            return event
        except msgspec.ValidationError as exc:
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
    """Decode a JSON envelope (as published to Kafka)."""
    try:
        return _envelope_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise UnknownEventError(str(exc)) from exc
