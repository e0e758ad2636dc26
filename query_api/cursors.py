"""Page cursors: opaque, tamper-evident, bound to what they page.

A cursor is a URL-safe string: the JSON of its fields and an HMAC-SHA256 tag (16 bytes) over
them, keyed by a server secret, so a client cannot point it elsewhere (a forged or edited
cursor is a 400, never a store call). A ranked-page cursor names a ranking snapshot and an
offset in it, bounded by the snapshot's size; a search cursor holds the sort values of the
last hit (``search_after``) and a digest of the search it belongs to.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import TypeVar

import msgspec

TAG_BYTES = 16
MAX_LENGTH = 512
T = TypeVar("T")


class BadCursor(ValueError):
    """A cursor that this API did not make, or made for another list."""


class Cursor(msgspec.Struct, frozen=True, array_like=True):
    """Where the next page of a ranked list starts."""

    commentable_id: str
    sort: str
    snapshot: str
    offset: int
    parent_id: str = ""  # the list: "" for the top level, else the comment whose replies


class SearchCursor(msgspec.Struct, frozen=True, array_like=True):
    """Where the next page of a search starts."""

    search: str  # digest of the query, filters and sort it belongs to
    after: list[float | int | str]  # the last hit's sort values


class Sealer:
    """Seals structs into cursors and opens them again, with ``secret``."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def seal(self, value: msgspec.Struct) -> str:
        body = msgspec.json.encode(value)
        tag = hmac.new(self._secret, body, hashlib.sha256).digest()[:TAG_BYTES]
        return base64.urlsafe_b64encode(tag + body).decode().rstrip("=")

    def open(self, text: str, kind: type[T]) -> T:
        """The ``kind`` sealed in ``text`` by this secret; else ``BadCursor``."""
        try:
            if len(text) > MAX_LENGTH:
                raise ValueError("too long")
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            tag, body = raw[:TAG_BYTES], raw[TAG_BYTES:]
            expected = hmac.new(self._secret, body, hashlib.sha256).digest()[:TAG_BYTES]
            if not hmac.compare_digest(tag, expected):
                raise ValueError("bad tag")
            return msgspec.json.decode(body, type=kind)
        except (ValueError, msgspec.DecodeError):
            raise BadCursor("the cursor is invalid (edited, or not from this API)") from None


class CursorSigner:
    """Makes and checks ranked-page and search cursors with ``secret``."""

    def __init__(self, secret: bytes, max_offset: int) -> None:
        self._sealer = Sealer(secret)
        self._max_offset = max_offset

    def encode(self, cursor: Cursor | SearchCursor) -> str:
        return self._sealer.seal(cursor)

    def decode(self, text: str, commentable_id: str, sort: str, parent_id: str = "") -> Cursor:
        """The ranked-page cursor in ``text``, if this API made it for this list."""
        cursor = self._sealer.open(text, Cursor)
        if (cursor.commentable_id, cursor.sort, cursor.parent_id) != (
            commentable_id,
            sort,
            parent_id,
        ):
            raise BadCursor("the cursor belongs to another list")
        if not 0 <= cursor.offset <= self._max_offset:
            raise BadCursor("the cursor is invalid (edited, or not from this API)")
        return cursor

    def decode_search(self, text: str, search: str) -> SearchCursor:
        """The search cursor in ``text``, if this API made it for the search ``search``."""
        cursor = self._sealer.open(text, SearchCursor)
        if cursor.search != search:
            raise BadCursor("the cursor belongs to another search")
        if len(cursor.after) != 2:
            raise BadCursor("the cursor is invalid (edited, or not from this API)")
        return cursor


def cursor_key(cursor_secret: str, jwt_secret: str) -> bytes:
    """The cursor signing key: ``cursor_secret``, or (local runs only: elsewhere the services
    refuse to start without one) a key derived from the JWT secret."""
    if cursor_secret:
        return cursor_secret.encode()
    return hmac.new(jwt_secret.encode(), b"tally ranked-page cursors", hashlib.sha256).digest()
