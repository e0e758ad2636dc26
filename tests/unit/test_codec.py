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
