"""The relay's Kafka headers, written and read back; anything else is ``BadHeaders``."""

from __future__ import annotations

import pytest

from event_store.messaging import EVENT, BadHeaders, MessageHeaders, decode_headers, encode_headers


@pytest.mark.parametrize(
    "headers",
    [
        MessageHeaders(position=7),
        MessageHeaders(
            kind="marker",
            position=123456,
            prev=123400,
            epoch=3,
            partitions=6,
            type="VoteCast",
            traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            correlation_id="req-é",
        ),
    ],
)
def test_headers_round_trip(headers: MessageHeaders) -> None:
    assert decode_headers(encode_headers(headers)) == headers


def test_a_message_without_kind_is_an_event() -> None:
    assert decode_headers([("position", b"5")]) == MessageHeaders(kind=EVENT, position=5)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        [],
        [("kind", b"event")],  # no position
        [("position", b"five")],
        [("position", None)],  # Kafka allows a header without a value
        [("position", b"5"), ("type", None)],
    ],
)
def test_foreign_headers_are_refused(raw: list[tuple[str, bytes | None]] | None) -> None:
    with pytest.raises(BadHeaders, match="not a relay message"):
        decode_headers(raw)  # type: ignore[arg-type]
