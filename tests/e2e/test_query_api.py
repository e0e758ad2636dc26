"""The query API end to end: commands over HTTP, projections, reads over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from kernel.auth import mint_token
from kernel.settings import Settings
from projectors import ranking
from tally import stack
from tests.e2e.conftest import running_system
from tests.pipeline import isolated, redis_server_name

QUERY_PORT = 28101
COMMAND_PORT = 28100


@pytest.fixture(scope="module")
def services(settings: Settings) -> Iterator[Settings]:
    """Command API, query API, relay and every projector, as processes."""
    with running_system(isolated(settings), COMMAND_PORT, QUERY_PORT) as config:
        yield config


def token(settings: Settings, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(user, settings.jwt_secret, 600)}"}


@pytest.fixture
async def http() -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{COMMAND_PORT}", timeout=30) as w,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{QUERY_PORT}", timeout=30) as r,
    ):
        yield w, r


async def post(
    write: httpx.AsyncClient,
    settings: Settings,
    thread: str,
    text: str,
    user: str = "alice",
    parent: str | None = None,
) -> dict[str, Any]:
    body = {"commentable_id": thread, "content": text}
    if parent is not None:
        body["parent_id"] = parent
    reply = await write.post("/api/comments", json=body, headers=token(settings, user))
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


async def vote(
    write: httpx.AsyncClient, settings: Settings, comment_id: str, user: str, value: int
) -> int:
    reply = await write.put(
        f"/api/comments/{comment_id}/vote", json={"value": value}, headers=token(settings, user)
    )
    assert reply.status_code == 200, reply.text
    return int(reply.json()["position"])


async def test_a_vote_read_back_with_min_position_shows_the_new_score_at_once(
    services: Settings, http: Any
) -> None:
    write, read = http
    thread = f"t-{uuid.uuid4().hex[:8]}"
    comment = await post(write, services, thread, "read your writes")
    position = await vote(write, services, comment["id"], "bob", 1)
    reply = await read.get(
        f"/api/comments/{comment['id']}/score", params={"min_position": position}
    )
    assert reply.status_code == 200 and reply.json() == {
        "comment_id": comment["id"],
        "up": 1,
        "down": 0,
        "score": 1,
    }
    assert int(reply.headers["x-tally-position"]) >= position
    full = await read.get(
        f"/api/comments/{comment['id']}", headers={"X-Tally-Min-Position": str(position)}
    )
    assert full.json()["content"] == "read your writes" and full.json()["score"] == 1
    mine = await read.get(
        "/api/me/votes", params={"comment_ids": comment["id"]}, headers=token(services, "bob")
    )
    assert mine.json() == {"votes": {comment["id"]: 1}}


async def test_every_sort_order_is_right_on_a_thread(services: Settings, http: Any) -> None:
    write, read = http
    thread = f"t-{uuid.uuid4().hex[:8]}"
    comments = [await post(write, services, thread, f"comment {n}") for n in range(8)]
    patterns = [(3, 0), (0, 2), (5, 5), (1, 1), (4, 1), (0, 0), (2, 6), (7, 3)]
    last = 0
    for comment, (ups, downs) in zip(comments, patterns, strict=True):
        for n in range(ups):
            last = await vote(write, services, comment["id"], f"up{n}", 1)
        for n in range(downs):
            last = await vote(write, services, comment["id"], f"down{n}", -1)
    created = {
        c["id"]: int(datetime.fromisoformat(c["created_at"]).timestamp() * 1000) for c in comments
    }
    for sort in ranking.SORTS:
        reply = await read.get(
            f"/api/commentables/{thread}/comments",
            params={"sort": sort, "limit": 100, "min_position": last},
        )
        assert reply.status_code == 200, reply.text
        got = [c["id"] for c in reply.json()["comments"]]
        expected = sorted(
            (c["id"] for c in comments),
            key=lambda i: (
                ranking.scores(*patterns[[c["id"] for c in comments].index(i)], created[i])[sort],
                i,
            ),
            reverse=True,
        )
        assert got == expected, sort


async def test_paging_while_votes_change_yields_every_comment_exactly_once(
    services: Settings, http: Any
) -> None:
    write, read = http
    thread = f"t-{uuid.uuid4().hex[:8]}"
    comments = [await post(write, services, thread, f"paged {n}") for n in range(23)]
    last = 0
    for n, comment in enumerate(comments):
        last = await vote(write, services, comment["id"], "seed", 1 if n % 2 else -1)
    seen: list[str] = []
    cursor = None
    page = 0
    while True:
        params: dict[str, Any] = {"sort": "top", "limit": 5, "min_position": last}
        if cursor:
            params["cursor"] = cursor
        body = (await read.get(f"/api/commentables/{thread}/comments", params=params)).json()
        seen += [c["id"] for c in body["comments"]]
        # Move comments across the page boundary before the next page.
        for comment in comments[page * 3 : page * 3 + 3]:
            last = await vote(write, services, comment["id"], f"mover{page}", -1 if page % 2 else 1)
        page += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(c["id"] for c in comments)
    assert len(seen) == len(set(seen))


async def test_search_finds_comments_by_their_words(services: Settings, http: Any) -> None:
    write, read = http
    thread = f"t-{uuid.uuid4().hex[:8]}"
    wanted = await post(write, services, thread, "the saxophone solo was superb")
    await post(write, services, thread, "a quiet piano piece")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        reply = await read.get(
            "/api/comments/search", params={"q": "saxophone superb", "commentable_id": thread}
        )
        ids = [c["id"] for c in reply.json()["comments"]]
        if ids:
            break
        await asyncio.sleep(0.2)
    assert ids == [wanted["id"]]
    odd = await read.get(
        "/api/comments/search", params={"q": '"unbalanced (quote -| *', "commentable_id": thread}
    )
    assert odd.status_code == 200  # user syntax never breaks the query


async def test_a_live_client_sees_a_vote_within_a_second(services: Settings, http: Any) -> None:
    write, read = http
    thread = f"t-{uuid.uuid4().hex[:8]}"
    comment = await post(write, services, thread, "live one")
    await vote(write, services, comment["id"], "warmup", 1)
    subscribed = asyncio.Event()
    received: asyncio.Queue[float] = asyncio.Queue()

    async def listen() -> None:
        async with read.stream("GET", f"/api/commentables/{thread}/live") as stream:
            async for line in stream.aiter_lines():
                if line.startswith(": subscribed"):  # the stream's first line, once listening
                    subscribed.set()
                if line.startswith("data:") and comment["id"] in line and '"up":2' in line:
                    await received.put(time.monotonic())
                    return

    listener = asyncio.create_task(listen())
    await asyncio.wait_for(subscribed.wait(), 10)
    await vote(write, services, comment["id"], "second", 1)
    voted = time.monotonic()
    arrived = await asyncio.wait_for(received.get(), 10)
    listener.cancel()
    print(f"live update after {arrived - voted:.3f} s")
    assert arrived - voted < 1


async def test_scores_survive_a_redis_outage_and_recover_without_a_restart(
    services: Settings, http: Any, settings: Settings
) -> None:
    write, read = http
    thread = f"t-{uuid.uuid4().hex[:8]}"
    comment = await post(write, services, thread, "outage")
    position = await vote(write, services, comment["id"], "bob", 1)
    # Elasticsearch has the vote too before Redis goes away: a comment read with min_position
    # waits for both (a plain read shows Redis's counts over a body that may be behind).
    for _ in range(10):  # 504 after each 2 s wait, while the projectors are behind
        doc = await read.get(f"/api/comments/{comment['id']}", params={"min_position": position})
        if doc.status_code != 504:
            break
    assert doc.status_code == 200, doc.text
    assert doc.json()["content"] == "outage" and doc.json()["up"] == 1
    redis = next(s for s in stack.servers(settings) if s.name == redis_server_name(settings))
    redis.stop()
    try:
        stale = await read.get(f"/api/comments/{comment['id']}/score")
        assert stale.status_code == 200 and stale.headers["x-tally-stale"] == "true"
        assert stale.json()["score"] == 1
        assert (await read.get("/ready")).json()["status"] == "degraded"
    finally:
        await asyncio.to_thread(redis.up)
    for _ in range(50):
        fresh = await read.get(f"/api/comments/{comment['id']}/score")
        if fresh.status_code == 200 and "x-tally-stale" not in fresh.headers:
            break
        await asyncio.sleep(0.2)
    assert "x-tally-stale" not in fresh.headers and fresh.json()["score"] == 1
    assert (await read.get("/ready")).json()["status"] == "ready"
    # The projectors recover too (they back off while Redis is away, up to 5 s between tries):
    # a vote cast now shows up, and the tests after this one start from projectors caught up.
    position = await vote(write, services, comment["id"], "carol", -1)
    for _ in range(15):  # 504 after each 2 s wait, while the projectors are behind
        doc = await read.get(f"/api/comments/{comment['id']}", params={"min_position": position})
        if doc.status_code != 504:
            break
    assert doc.status_code == 200, doc.text
    assert (doc.json()["up"], doc.json()["down"]) == (1, 1)


async def test_bad_query_input_gets_problems(services: Settings, http: Any) -> None:
    _, read = http
    cases = [
        ("/api/scores", {"ids": "nope"}, 400),
        ("/api/scores", {"ids": ",".join(str(uuid.uuid4()) for _ in range(501))}, 400),
        ("/api/commentables/x/comments", {"sort": "random"}, 400),
        ("/api/commentables/x/comments", {"cursor": "garbage"}, 400),
        (f"/api/comments/{uuid.uuid4()}/score", {}, 404),
        ("/api/me/votes", {"comment_ids": str(uuid.uuid4())}, 401),
    ]
    for path, params, status in cases:
        reply = await read.get(path, params=params)
        assert reply.status_code == status, (path, reply.text)
        assert reply.headers["content-type"].startswith("application/problem+json")


async def test_threads_replies_depth_counts_and_the_viewers_votes(
    services: Settings, http: Any
) -> None:
    write, read = http
    thread = f"t-{uuid.uuid4().hex[:8]}"
    parent = await post(write, services, thread, "parent")
    other = await post(write, services, thread, "other")
    first = await post(write, services, thread, "first reply", parent=parent["id"])
    second = await post(write, services, thread, "second reply", user="carol", parent=parent["id"])
    nested = await post(write, services, thread, "nested", parent=first["id"])
    await vote(write, services, second["id"], "dave", 1)
    last = await vote(write, services, second["id"], "bob", 1)
    await vote(write, services, other["id"], "bob", -1)
    last = await vote(write, services, first["id"], "erin", -1)
    bob = token(services, "bob")
    wanted = {"min_position": last, "limit": 100}

    top = await read.get(f"/api/commentables/{thread}/comments", params=wanted, headers=bob)
    assert top.status_code == 200, top.text
    body = top.json()
    assert {c["id"] for c in body["comments"]} == {parent["id"], other["id"]}
    assert body["comment_count"] == 5
    by_id = {c["id"]: c for c in body["comments"]}
    assert by_id[parent["id"]]["reply_count"] == 2 and by_id[parent["id"]]["depth"] == 0
    assert by_id[other["id"]]["my_vote"] == -1 and by_id[parent["id"]]["my_vote"] == 0
    assert top.headers["vary"] == "Authorization"

    replies = await read.get(f"/api/comments/{parent['id']}/replies", params=wanted, headers=bob)
    assert replies.status_code == 200, replies.text
    listed = replies.json()["comments"]
    assert [c["id"] for c in listed] == [second["id"], first["id"]]  # top: +2 before -1
    assert [c["depth"] for c in listed] == [1, 1] and [c["my_vote"] for c in listed] == [1, 0]
    assert listed[1]["reply_count"] == 1 and listed[0]["parent_id"] == parent["id"]
    deeper = await read.get(f"/api/comments/{first['id']}/replies", params=wanted)
    assert [(c["id"], c["depth"], c["my_vote"]) for c in deeper.json()["comments"]] == [
        (nested["id"], 2, None)  # no token: no viewer's vote
    ]

    # Replies page with cursors of their own; a cursor does not move to another list.
    page = await read.get(
        f"/api/comments/{parent['id']}/replies", params={"limit": 1, "min_position": last}
    )
    cursor = page.json()["next_cursor"]
    rest = await read.get(
        f"/api/comments/{parent['id']}/replies", params={"limit": 1, "cursor": cursor}
    )
    assert [c["id"] for c in page.json()["comments"] + rest.json()["comments"]] == [
        second["id"],
        first["id"],
    ]
    assert rest.json()["next_cursor"] is None
    stolen = await read.get(f"/api/commentables/{thread}/comments", params={"cursor": cursor})
    assert stolen.status_code == 400, stolen.text

    single = await read.get(f"/api/comments/{second['id']}", params=wanted, headers=bob)
    assert single.json()["my_vote"] == 1 and single.json()["depth"] == 1
    unknown = await read.get(f"/api/comments/{uuid.uuid4()}/replies")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("application/problem+json")
    forged = await read.get(
        f"/api/comments/{second['id']}", headers={"Authorization": "Bearer not-a-token"}
    )
    assert forged.status_code == 401


async def test_a_first_page_read_with_min_position_includes_the_readers_own_comment(
    services: Settings, http: Any
) -> None:
    """Within one snapshot period: a list read before the write must not hide it from a read
    with the write's position (the shared snapshot predates it)."""
    write, read = http
    thread = f"t-{uuid.uuid4().hex[:8]}"
    first = await post(write, services, thread, "first")
    before = await read.get(
        f"/api/commentables/{thread}/comments", params={"min_position": first["position"]}
    )
    assert [c["id"] for c in before.json()["comments"]] == [first["id"]]
    for n in range(3):  # each read with its position sees it, at once
        mine = await post(write, services, thread, f"mine {n}")
        after = await read.get(
            f"/api/commentables/{thread}/comments",
            params={"min_position": mine["position"], "sort": "new"},
        )
        assert after.json()["comments"][0]["id"] == mine["id"], after.text
        assert after.json()["comment_count"] == n + 2


async def test_a_deleted_comment_is_gone_but_its_replies_stay(
    services: Settings, http: Any
) -> None:
    write, read = http
    thread = f"t-{uuid.uuid4().hex[:8]}"
    word = f"zebra{uuid.uuid4().hex[:6]}"
    parent = await post(write, services, thread, f"parent {word}")
    lonely = await post(write, services, thread, f"lonely {word}")
    await post(write, services, thread, "still here", user="bob", parent=parent["id"])
    alice = token(services, "alice")
    for comment in (parent, lonely):
        gone = await write.delete(f"/api/comments/{comment['id']}", headers=alice)
        assert gone.status_code == 200, gone.text
    last = int(gone.json()["position"])
    wanted = {"min_position": last}

    doc = await read.get(f"/api/comments/{parent['id']}", params=wanted)
    assert doc.status_code == 200, doc.text
    assert doc.json()["deleted"] is True
    assert doc.json()["content"] is None and doc.json()["author_id"] is None
    listed = await read.get(f"/api/commentables/{thread}/comments", params=wanted)
    # The parent stays in the list as "[deleted]" because it has a reply; the other is gone.
    assert [(c["id"], c["deleted"], c["content"]) for c in listed.json()["comments"]] == [
        (parent["id"], True, None)
    ]
    replies = await read.get(f"/api/comments/{parent['id']}/replies", params=wanted)
    assert [c["content"] for c in replies.json()["comments"]] == ["still here"]
    for _ in range(50):  # search reads Elasticsearch, refreshed about once a second
        found = await read.get("/api/comments/search", params={"q": word})
        if found.json()["comments"] == []:
            break
        await asyncio.sleep(0.2)
    assert found.json()["comments"] == []


async def test_the_live_stream_carries_new_edited_and_deleted_comments(
    services: Settings, http: Any
) -> None:
    write, read = http
    thread = f"t-{uuid.uuid4().hex[:8]}"
    await post(write, services, thread, "opens the thread")
    subscribed = asyncio.Event()
    events: list[tuple[str, dict[str, Any]]] = []

    async def listen() -> None:
        kind = ""
        async with read.stream("GET", f"/api/commentables/{thread}/live") as stream:
            async for line in stream.aiter_lines():
                if line.startswith(": subscribed"):
                    subscribed.set()
                elif line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    events.append((kind, json.loads(line.split(":", 1)[1])))
                    if kind == "comment_deleted":
                        return

    listener = asyncio.create_task(listen())
    await asyncio.wait_for(subscribed.wait(), 10)
    alice = token(services, "alice")
    comment = await post(write, services, thread, "new one")
    edited = await write.patch(
        f"/api/comments/{comment['id']}", json={"content": "edited one"}, headers=alice
    )
    assert edited.status_code == 200, edited.text
    await write.delete(f"/api/comments/{comment['id']}", headers=alice)
    await asyncio.wait_for(listener, 15)
    events = [(k, e) for k, e in events if e["comment_id"] == comment["id"]]  # not the opener's
    assert [(k, e["comment_id"]) for k, e in events] == [
        ("comment_created", comment["id"]),
        ("comment_edited", comment["id"]),
        ("comment_deleted", comment["id"]),
    ]
    assert events[1][1]["content"] == "edited one"
    assert events[0][1]["parent_id"] is None and events[0][1]["depth"] == 0
    positions = [e["position"] for _, e in events]
    assert positions == sorted(positions) and positions[0] == comment["position"]


async def test_a_browser_app_on_the_allowed_origin_passes_cors(
    services: Settings, http: Any
) -> None:
    write, read = http
    origin = "http://127.0.0.1:8002"  # the reference web page's, allowed by default
    preflight = await write.options(
        "/api/comments",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,idempotency-key",
        },
    )
    assert preflight.status_code in (200, 204), preflight.text
    assert preflight.headers["access-control-allow-origin"] == origin
    assert int(preflight.headers["access-control-max-age"]) >= 600  # cached, not per request
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert "idempotency-key" in allowed and "authorization" in allowed

    posted = await write.post(
        "/api/comments",
        json={"commentable_id": f"t-{uuid.uuid4().hex[:8]}", "content": "from a browser"},
        headers={**token(services, "alice"), "Origin": origin},
    )
    assert posted.status_code == 201
    assert posted.headers["location"] == f"/api/comments/{posted.json()['id']}"
    assert posted.headers["access-control-allow-origin"] == origin
    exposed = posted.headers["access-control-expose-headers"].lower()
    assert "location" in exposed and "x-tally-position" in exposed and "retry-after" in exposed

    got = await read.get(
        f"/api/comments/{posted.json()['id']}/score",
        params={"min_position": posted.json()["position"]},
        headers={"Origin": origin},
    )
    assert got.headers["access-control-allow-origin"] == origin
    assert "x-tally-stale" in got.headers["access-control-expose-headers"].lower()

    vote_preflight = await write.options(
        f"/api/comments/{posted.json()['id']}/vote",
        headers={"Origin": origin, "Access-Control-Request-Method": "PUT"},
    )
    assert vote_preflight.headers["access-control-allow-origin"] == origin
    plain = await write.options(f"/api/comments/{posted.json()['id']}/vote")
    assert plain.headers["allow"] == "DELETE, OPTIONS, PUT"  # every method of the path

    stranger = await read.get(
        "/api/scores", params={"ids": str(uuid.uuid4())}, headers={"Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in stranger.headers


async def test_both_openapi_documents_describe_what_is_sent(services: Settings, http: Any) -> None:
    write, read = http
    docs = [(await c.get("/schema/openapi.json")).json() for c in (write, read)]
    for doc in docs:
        assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert not any("metrics" in path or "health" in path for path in doc["paths"])
        for path, item in doc["paths"].items():
            for method, operation in item.items():
                where = f"{method} {path}"
                for status, response in operation["responses"].items():
                    content = response.get("content", {})
                    if status.startswith("2"):
                        assert content, where  # a typed body, not a bare string
                        schema = next(iter(content.values()))["schema"]
                        assert schema != {"type": "string"} or "text/event-stream" in content
                    elif status != "304":
                        assert list(content) == ["application/problem+json"], (where, status)
                assert "400" in operation["responses"], where
    command, query = docs
    post = command["paths"]["/api/comments"]["post"]
    assert {p["name"] for p in post["parameters"]} >= {"Idempotency-Key", "X-Request-ID"}
    assert "Location" in post["responses"]["201"]["headers"]
    assert post["security"] == [{"bearer": []}]
    one = query["paths"]["/api/comments/{comment_id}"]["get"]
    assert {p["name"] for p in one["parameters"]} >= {"min_position", "X-Tally-Min-Position"}
    assert "X-Tally-Position" in one["responses"]["200"]["headers"]
    assert {"504", "404"} <= set(one["responses"])
    live = query["paths"]["/api/commentables/{commentable_id}/live"]["get"]
    assert list(live["responses"]["200"]["content"]) == ["text/event-stream"]
    assert "Last-Event-ID" in {p["name"] for p in live["parameters"]}
    assert "/api/comments/{comment_id}/replies" in query["paths"]
