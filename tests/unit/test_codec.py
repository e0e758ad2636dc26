"""Event encoding, decoding and upcasting."""

from typing import Any
from uuid import uuid4

import pytest

from schemas import codec
from schemas.codec import UnknownEventError, decode_event, encode
from schemas.events import VoteCast


def test_an_event_round_trips_through_json() -> None:
    event = VoteCast(comment_id=uuid4(), commentable_id="p", user_id="u", value=1, previous=0)
    assert decode_event("VoteCast", 1, encode(event)) == event


def test_an_unknown_type_is_an_error_not_a_skip() -> None:
    with pytest.raises(UnknownEventError, match="unknown event type"):
        decode_event("VoteExploded", 1, b"{}")


def test_an_unknown_schema_version_is_an_error() -> None:
    with pytest.raises(UnknownEventError, match="schema version 9"):
        decode_event("VoteCast", 9, b"{}")


def test_an_old_version_is_upcast_on_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend the current version is 2 and that v1 called the user "voter".
    def v1_to_v2(raw: dict[str, Any]) -> dict[str, Any]:
        return {**raw, "user_id": raw.pop("voter")}

    monkeypatch.setitem(codec.UPCASTERS, ("VoteCast", 1), v1_to_v2)
    monkeypatch.setattr(codec, "CURRENT_SCHEMA_VERSION", 2)
    cid = uuid4()
    old = encode(
        {
            "type": "VoteCast",
            "comment_id": cid,
            "commentable_id": "p",
            "voter": "u",
            "value": 1,
            "previous": 0,
            "schema_version": 1,
        }
    )
    event = decode_event("VoteCast", 1, old)
    assert event == VoteCast(
        comment_id=cid, commentable_id="p", user_id="u", value=1, previous=0, schema_version=2
    )


def test_a_missing_upcaster_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "CURRENT_SCHEMA_VERSION", 3)
    with pytest.raises(UnknownEventError, match="no upcaster for VoteCast v1"):
        decode_event("VoteCast", 1, b'{"type": "VoteCast"}')


def test_a_vote_written_before_the_author_field_still_decodes() -> None:
    from schemas.codec import decode_event

    old = b'{"type":"VoteCast","comment_id":"6f1c1f3e-1d7b-4b8e-9a53-0c1a2b3c4d5e",'
    old += b'"commentable_id":"p","user_id":"u","value":1,"previous":0}'
    event = decode_event("VoteCast", 1, old)
    assert isinstance(event, VoteCast) and event.comment_author_id is None


def _envelope_json(event: dict[str, Any]) -> bytes:
    return encode(
        {
            "event_id": uuid4(),
            "stream_id": "vote-x",
            "stream_version": 1,
            "position": 7,
            "occurred_at": "2026-11-27T04:00:00+00:00",
            "event": event,
        }
    )


def test_an_envelope_of_the_current_schema_decodes_in_one_pass_to_the_same_value() -> None:
    from datetime import UTC, datetime

    from schemas.codec import decode_envelope
    from schemas.envelope import Envelope

    event = VoteCast(comment_id=uuid4(), commentable_id="p", user_id="u", value=1, previous=0)
    envelope = Envelope(
        event_id=uuid4(),
        stream_id="vote-x",
        stream_version=3,
        position=42,
        occurred_at=datetime(2026, 11, 27, 4, 0, 0, 123000, tzinfo=UTC),
        correlation_id="c-1",
        event=event,
    )
    assert decode_envelope(encode(envelope)) == envelope


def test_an_old_envelope_that_would_decode_as_current_is_still_upcast(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from schemas.codec import decode_envelope

    # v1 stored the value negated; its fields would fit the current struct as they are.
    def v1_to_v2(raw: dict[str, Any]) -> dict[str, Any]:
        return {**raw, "value": -raw["value"]}

    monkeypatch.setitem(codec.UPCASTERS, ("VoteCast", 1), v1_to_v2)
    monkeypatch.setattr(codec, "CURRENT_SCHEMA_VERSION", 2)
    old = {
        "type": "VoteCast",
        "comment_id": str(uuid4()),
        "commentable_id": "p",
        "user_id": "u",
        "value": -1,
        "previous": 0,
        "schema_version": 1,
    }
    event = decode_envelope(_envelope_json(old)).event
    assert isinstance(event, VoteCast) and (event.value, event.schema_version) == (1, 2)


def test_an_envelope_of_an_unknown_type_is_an_error() -> None:
    from schemas.codec import decode_envelope

    with pytest.raises(UnknownEventError, match="unknown event type"):
        decode_envelope(_envelope_json({"type": "VoteExploded", "comment_id": str(uuid4())}))
