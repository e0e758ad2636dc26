"""uvicorn's httptools protocol with the limits it lacks: request head size and header count,
a deadline for the request head, and requests in progress per worker.

httptools gathers a request's line and headers in memory for as long as a client keeps sending
them, and waits as long as a client likes for the end of them (one byte a minute keeps a
connection and its buffers). Here the bytes of a request head are counted as they arrive: past
``MAX_HEAD_BYTES`` the answer is 431, past ``MAX_HEADERS`` headers too, and a head not
complete ``TALLY_HTTP_HEAD_SECONDS`` after it began is answered 408. Past ``limit_concurrency``
requests in progress in this worker, a new one is answered 503 with ``Retry-After``
(uvicorn's own check also counts idle kept-alive connections, and answers in plain text).
Each refusal is a problem+json body and a closed connection.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from kernel.settings import get_settings

MAX_HEAD_BYTES = 32 * 1024  # a batch read of 500 ids is a 19 KiB request line
MAX_HEADERS = 100

_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Unavailable"}


class HeadRefused(Exception):
    """Raised inside a parser callback to stop reading a request that passed a limit."""


def problem_bytes(status: int, detail: str, extra: str = "") -> bytes:
    """A whole HTTP/1.1 answer with a problem+json body, closing the connection; ``extra``:
    more header lines."""
    body = json.dumps(
        {
            "type": f"urn:tally:problem:http-{status}",
            "title": _REASONS[status],
            "status": status,
            "detail": detail,
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\n"
        f"{extra}connection: close\r\n\r\n"
    )
    return head.encode() + body


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that bounds each request head in bytes, headers and time.

    The head is what comes before the first empty line; its bytes are counted as they arrive,
    before httptools buffers them, so no single header can grow without bound either.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True
        self._head_bytes = 0
        self._tail = b""  # the last bytes seen, for an empty line split between two reads
        self._headers = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._max_requests, self.limit_concurrency = self.limit_concurrency, None
        self._head_seconds = get_settings().http_head_seconds

    def data_received(self, data: bytes) -> None:
        if self._reading_head and not self._count_head(data):
            return
        try:
            super().data_received(data)
        except HeadRefused:
            return

    def _count_head(self, data: bytes) -> bool:
        """Count the head bytes in ``data``; ``False`` once the head is refused."""
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self._head_seconds, self._head_too_slow)
        seen = self._tail + data
        end = seen.find(b"\r\n\r\n")
        counted = len(data) if end < 0 else end + 4 - len(self._tail)
        self._head_bytes += counted
        self._tail = seen[-3:]
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(431, f"the request head is larger than {MAX_HEAD_BYTES} bytes")
            return False
        if end >= 0:  # the head is complete: what follows is its body
            self._reading_head = False
            self._stop_timer()
        return True

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._headers = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        if self._headers > MAX_HEADERS:
            self._refuse(431, f"more than {MAX_HEADERS} request headers")
            raise HeadRefused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._max_requests is not None and len(self.tasks) >= self._max_requests:
            detail = f"this worker is answering {self._max_requests} requests already"
            self._refuse(503, detail, "retry-after: 1\r\n")
            raise HeadRefused
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head, self._head_bytes, self._tail = True, 0, b""  # the next request

    def _stop_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._reading_head and self._head_bytes:
            detail = f"the request head did not arrive within {self._head_seconds:g} s"
            self._refuse(408, detail)

    def _refuse(self, status: int, detail: str, extra: str = "") -> None:
        if self.transport.is_closing():
            return
        self.logger.warning("request refused: %s", detail)
        self.transport.write(problem_bytes(status, detail, extra))
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)
