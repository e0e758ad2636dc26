"""Ranked-page cursors: opaque, tamper-evident, bound to their list.

A cursor names a ranking snapshot and an offset in it. It is a URL-safe string: the JSON of
its fields and an HMAC-SHA256 tag (16 bytes) over them, keyed by a server secret, so a client
cannot point it at another list, snapshot or offset (a forged or edited cursor is a 400,
never a Redis call). The offset is bounded by the snapshot's size.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import msgspec

TAG_BYTES = 16


class BadCursor(ValueError):
    """A cursor that this API did not make, or made for another list."""


class Cursor(msgspec.Struct, frozen=True, array_like=True):
    """Where the next page starts."""

    commentable_id: str
    sort: str
    snapshot: str
    offset: int
    parent_id: str = ""  # the list: "" for the top level, else the comment whose replies


class CursorSigner:
    """Makes and checks cursors with ``secret``."""

    def __init__(self, secret: bytes, max_offset: int) -> None:
        self._secret = secret
        self._max_offset = max_offset

    def encode(self, cursor: Cursor) -> str:
        body = msgspec.json.encode(cursor)
        tag = hmac.new(self._secret, body, hashlib.sha256).digest()[:TAG_BYTES]
        return base64.urlsafe_b64encode(tag + body).decode().rstrip("=")

    def decode(self, text: str, commentable_id: str, sort: str, parent_id: str = "") -> Cursor:
        """The cursor in ``text``, if this API made it for this list; else ``BadCursor``."""
        try:
            if len(text) > 512:
                raise ValueError("too long")
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            tag, body = raw[:TAG_BYTES], raw[TAG_BYTES:]
            expected = hmac.new(self._secret, body, hashlib.sha256).digest()[:TAG_BYTES]
            if not hmac.compare_digest(tag, expected):
                raise ValueError("bad tag")
            cursor = msgspec.json.decode(body, type=Cursor)
        except (ValueError, msgspec.DecodeError):
            raise BadCursor("the cursor is invalid (edited, or not from this API)") from None
        if (cursor.commentable_id, cursor.sort, cursor.parent_id) != (
            commentable_id,
            sort,
            parent_id,
        ):
            raise BadCursor("the cursor belongs to another list")
        if not 0 <= cursor.offset <= self._max_offset:
            raise BadCursor("the cursor is invalid (edited, or not from this API)")
        return cursor


def cursor_key(cursor_secret: str, jwt_secret: str) -> bytes:
    """The cursor signing key: ``cursor_secret``, or one derived from the JWT secret."""
    if cursor_secret:
        return cursor_secret.encode()
    return hmac.new(jwt_secret.encode(), b"tally ranked-page cursors", hashlib.sha256).digest()
