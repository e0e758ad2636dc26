"""Which requests the fast lane answers itself and which it hands to the app (pure ASGI)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, cast

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from query_api.fast_lane import fast_lane
from query_api.redis_reads import RedisReads, Score

KNOWN = str(uuid.uuid4())


class _Reads:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    async def score(self, comment_id: str) -> Score | None:
        if self.fail:
            raise RedisConnectionError("down")
        return Score(comment_id, 3, 1, 2, 42) if comment_id == KNOWN else None


class _App:
    """Stands for the litestar app: counts what reaches it and answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.calls = 0
        self.status = status

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b"app %d" % self.calls})


async def _get(
    lane: Any, path: str, query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": query,
        "headers": headers or [],
    }
    await lane(scope, None, send)
    return sent


def _lane(app: _App, reads: _Reads | None = None, cache_s: float = 60) -> Any:
    return fast_lane(cast(Any, app), lambda: cast(RedisReads, reads or _Reads()), "test", cache_s)


async def test_a_plain_score_read_never_reaches_the_app() -> None:
    app = _App()
    sent = await _get(_lane(app), f"/api/comments/{KNOWN}/score", headers=[(b"x-request-id", b"a")])
    assert app.calls == 0
    assert sent[0]["status"] == 200
    assert dict(sent[0]["headers"])[b"x-tally-position"] == b"42"
    assert dict(sent[0]["headers"])[b"x-request-id"] == b"a"
    assert sent[1]["body"] == b'{"comment_id":"%s","up":3,"down":1,"score":2}' % KNOWN.encode()


@pytest.mark.parametrize(
    ("path", "query", "headers"),
    [
        (f"/api/comments/{uuid.uuid4()}/score", b"", []),  # unknown to Redis
        (f"/api/comments/{KNOWN}/score", b"min_position=3", []),
        (f"/api/comments/{KNOWN}/score", b"", [(b"x-tally-min-position", b"3")]),
        (f"/api/comments/{KNOWN}/score", b"", [(b"origin", b"https://a.example")]),
        ("/api/comments/zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz/score", b"", []),
        (f"/api/comments/{KNOWN}", b"", []),
        ("/api/commentables/c/comments", b"cursor=abc", []),
        ("/api/commentables/c/comments", b"sort=top&min_position=9", []),
        ("/api/commentables/c/comments", b"", [(b"authorization", b"Bearer x")]),
        ("/api/commentables/c/comments", b"", [(b"if-none-match", b'"e"')]),
    ],
)
async def test_anything_but_a_plain_read_goes_to_the_app(
    path: str, query: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    app = _App()
    lane = _lane(app)
    for _ in range(2):
        sent = await _get(lane, path, query, headers)
        assert sent[1]["body"].startswith(b"app")
    assert app.calls == 2


async def test_redis_down_leaves_the_answer_to_the_route() -> None:
    app = _App()
    sent = await _get(_lane(app, _Reads(fail=True)), f"/api/comments/{KNOWN}/score")
    assert app.calls == 1 and sent[1]["body"] == b"app 1"


async def test_a_first_page_is_built_once_and_shared_but_errors_are_not() -> None:
    app = _App()
    lane = _lane(app)
    bodies = [(await _get(lane, "/api/commentables/c/comments", b"sort=top&limit=50"))[1]["body"]]
    bodies += [(await _get(lane, "/api/commentables/c/comments", b"sort=top&limit=50"))[1]["body"]]
    assert bodies == [b"app 1", b"app 1"] and app.calls == 1
    await _get(lane, "/api/commentables/c/comments", b"sort=new")
    assert app.calls == 2  # another page

    failing = _App(status=503)
    lane = _lane(failing)
    for _ in range(2):
        await _get(lane, "/api/commentables/c/comments")
    assert failing.calls == 2


async def test_with_no_time_to_keep_pages_every_page_reaches_the_app() -> None:
    app = _App()
    lane = _lane(app, cache_s=0)
    for _ in range(3):
        await _get(lane, "/api/commentables/c/comments", b"sort=top")
    assert app.calls == 3


async def test_readers_of_a_page_being_built_wait_for_it_instead_of_building_it_again() -> None:
    release = asyncio.Event()

    class _Slow(_App):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await release.wait()
            await super().__call__(scope, receive, send)

    app = _Slow()
    lane = _lane(app)
    readers = [
        asyncio.create_task(_get(lane, "/api/commentables/c/comments", b"sort=hot"))
        for _ in range(20)
    ]
    await asyncio.sleep(0.01)
    release.set()
    answers = await asyncio.gather(*readers)
    assert app.calls == 1
    assert {a[1]["body"] for a in answers} == {b"app 1"}


async def test_a_page_sent_in_pieces_is_kept_whole_and_failed_builds_leave_no_trace() -> None:
    class _Chunked(_App):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            self.calls += 1
            await asyncio.sleep(0.01)
            await send({"type": "http.response.start", "status": self.status, "headers": []})
            await send({"type": "http.response.body", "body": b"pa", "more_body": True})
            await send({"type": "http.response.body", "body": b"ge", "more_body": False})

    chunked = _Chunked()
    lane = _lane(chunked)
    await _get(lane, "/api/commentables/c/comments")
    again = await _get(lane, "/api/commentables/c/comments")
    assert chunked.calls == 1 and again[1]["body"] == b"page"

    failing = _Chunked(status=503)
    lane = _lane(failing)
    answers = await asyncio.gather(*(_get(lane, "/api/commentables/c/comments") for _ in range(5)))
    assert all(a[0]["status"] == 503 for a in answers)
    assert failing.calls >= 2  # nothing kept: waiters built their own answers
    assert (await _get(lane, "/api/commentables/c/comments"))[0]["status"] == 503
