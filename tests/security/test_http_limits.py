"""The API servers bound what a client may send before its request even starts: the size and
count of headers, the time to send them, and the requests in progress per worker."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator

import pytest

from kernel.settings import Settings, as_environment
from tally.processes import serve
from tally.processes import stop as stop_process

PORT = 28530
HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@pytest.fixture(scope="module")
def query_api(settings: Settings) -> Iterator[int]:
    env = as_environment(settings) | {
        "TALLY_HTTP_HEAD_SECONDS": "1",
        "TALLY_HTTP_MAX_REQUESTS": "3",
        "TALLY_QUERY_API_METRICS_PORT": "0",
    }
    proc = serve("query-api", PORT, env, workers=1)
    try:
        yield PORT
    finally:
        stop_process(proc)


def exchange(port: int, raw: bytes, wait: float = 5.0) -> tuple[int, dict[str, object], bool]:
    """Send ``raw``; the status, the problem body, and whether the server closed the socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        with contextlib.suppress(OSError):  # the server may close during a huge head
            sock.sendall(raw)
        data = b""
        closed = False
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                closed = True
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    problem = json.loads(body) if b"problem+json" in head else {}
    return status, problem, closed


def test_a_request_head_over_32_kib_is_431_and_the_connection_closes(query_api: int) -> None:
    raw = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n"
    status, problem, closed = exchange(query_api, raw)
    assert status == 431 and problem["status"] == 431 and closed


def test_more_than_100_headers_is_431(query_api: int) -> None:
    many = b"".join(b"X-H%d: v\r\n" % n for n in range(150))
    status, problem, _ = exchange(
        query_api, b"GET /health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"
    )
    assert status == 431 and "headers" in str(problem["detail"])


def test_a_head_sent_too_slowly_is_408(query_api: int) -> None:
    started = time.monotonic()
    status, problem, closed = exchange(query_api, b"GET /health HTTP/1.1\r\nHost: x\r\n", wait=5)
    assert status == 408 and closed and problem["status"] == 408
    assert time.monotonic() - started < 3


def test_an_ordinary_request_is_unchanged(query_api: int) -> None:
    status, _, _ = exchange(
        query_api, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == 200


def test_past_the_requests_in_progress_of_a_worker_a_new_one_is_503(query_api: int) -> None:
    streams = []
    try:
        for n in range(3):  # live streams stay in progress
            sock = socket.create_connection(("127.0.0.1", query_api), timeout=5)
            sock.sendall(b"GET /api/commentables/c-%d/live HTTP/1.1\r\nHost: x\r\n\r\n" % n)
            assert b" 200 " in sock.recv(4096)
            streams.append(sock)
        status, problem, _ = exchange(query_api, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 503 and problem["status"] == 503
    finally:
        for sock in streams:
            sock.close()
    time.sleep(0.5)
    status, _, _ = exchange(
        query_api, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == 200  # the streams ended: room again
