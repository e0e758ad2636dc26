"""Search on the real engine, end to end: read-your-writes, cursors, filters, sorts,
highlighting, Russian and English words, and deleted comments never found."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from kernel.settings import Settings
from tests.e2e.conftest import running_system
from tests.e2e.test_query_api import post, token
from tests.pipeline import isolated

COMMAND_PORT = 28120
QUERY_PORT = 28121


@pytest.fixture(scope="module")
def system(settings: Settings) -> Iterator[Settings]:
    tag = uuid.uuid4().hex[:8]
    config = isolated(settings, es_comments_alias=f"test-sc-{tag}", es_votes_alias=f"test-sv-{tag}")
    with running_system(config, COMMAND_PORT, QUERY_PORT) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{COMMAND_PORT}", timeout=30) as w,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{QUERY_PORT}", timeout=30) as r,
    ):
        yield w, r


async def search(read: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    reply = await read.get("/api/comments/search", params=params)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


async def test_a_word_typed_a_moment_ago_is_found_with_its_position_every_time(
    system: Settings, http: Any
) -> None:
    write, read = http
    thread = f"s-{uuid.uuid4().hex[:8]}"
    missed = []
    for n in range(300):
        word = f"w{uuid.uuid4().hex[:10]}"
        posted = await post(write, system, thread, f"typed just now {word}")
        found = await search(read, q=word, min_position=posted["position"])
        if [c["id"] for c in found["comments"]] != [posted["id"]]:
            missed.append(n)
    assert missed == []


async def test_concurrent_readers_of_their_own_writes_all_find_them(
    system: Settings, http: Any
) -> None:
    write, read = http
    thread = f"s-{uuid.uuid4().hex[:8]}"

    async def one(n: int) -> bool:
        word = f"c{uuid.uuid4().hex[:10]}"
        posted = await post(write, system, thread, f"concurrent {word}", user=f"u{n}")
        found = await search(read, q=word, min_position=posted["position"])
        return [c["id"] for c in found["comments"]] == [posted["id"]]

    for _ in range(5):
        assert all(await asyncio.gather(*(one(n) for n in range(16))))


async def test_search_pages_by_cursor_filters_sorts_and_highlights(
    system: Settings, http: Any
) -> None:
    write, read = http
    thread = f"s-{uuid.uuid4().hex[:8]}"
    word = f"k{uuid.uuid4().hex[:8]}"
    posted = []
    for n in range(23):
        user = "bob" if n % 3 == 0 else "alice"
        posted.append(await post(write, system, thread, f"same {word} text {n}", user=user))
    last = posted[-1]["position"]
    pages, cursor = [], ""
    while True:
        page = await search(
            read, q=word, commentable_id=thread, limit=5, cursor=cursor, min_position=last
        )
        pages.append([c["id"] for c in page["comments"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    found = [c for p in pages for c in p]
    assert sorted(found) == sorted(p["id"] for p in posted)  # every one once, across pages
    assert len(found) == len(set(found)) and len(pages) == 5
    newest = await search(read, q=word, commentable_id=thread, sort="new", limit=23)
    times = [datetime.fromisoformat(c["created_at"]) for c in newest["comments"]]
    assert len(times) == 23 and times == sorted(times, reverse=True)  # newest first
    bobs = await search(read, q=word, author_id="bob", limit=50)
    assert sorted(c["id"] for c in bobs["comments"]) == sorted(
        p["id"] for n, p in enumerate(posted) if n % 3 == 0
    )
    middle = datetime.fromisoformat(posted[10]["created_at"]).astimezone(UTC)
    later = await search(read, q=word, since=middle.isoformat(), limit=50)
    earlier = await search(read, q=word, until=middle.isoformat(), limit=50)
    assert len(later["comments"]) + len(earlier["comments"]) == 23
    assert posted[10]["id"] in [c["id"] for c in later["comments"]]
    hit = next(c for c in newest["comments"] if c["id"] == posted[22]["id"])
    assert hit["highlights"] == [f"same <em>{word}</em> text 22"]


async def test_a_cursor_of_one_search_is_refused_for_another(system: Settings, http: Any) -> None:
    write, read = http
    thread = f"s-{uuid.uuid4().hex[:8]}"
    for n in range(3):
        last = await post(write, system, thread, f"cursor word{thread} {n}")
    first = await search(read, q=f"word{thread}", limit=1, min_position=last["position"])
    assert first["next_cursor"]
    other = await read.get(
        "/api/comments/search", params={"q": "anything else", "cursor": first["next_cursor"]}
    )
    assert other.status_code == 400
    assert other.headers["content-type"].startswith("application/problem+json")


async def test_russian_and_english_words_match_their_other_forms(
    system: Settings, http: Any
) -> None:
    write, read = http
    thread = f"s-{uuid.uuid4().hex[:8]}"
    russian = await post(write, system, thread, "Ёжики бегали по лесу")
    english = await post(write, system, thread, "The runners were running fast")
    wait = {"min_position": english["position"], "commentable_id": thread}
    assert [c["id"] for c in (await search(read, q="ежик", **wait))["comments"]] == [russian["id"]]
    assert [c["id"] for c in (await search(read, q="лес", **wait))["comments"]] == [russian["id"]]
    assert [c["id"] for c in (await search(read, q="run", **wait))["comments"]] == [english["id"]]


async def test_operators_that_expand_into_many_terms_are_plain_text(
    system: Settings, http: Any
) -> None:
    write, read = http
    thread = f"s-{uuid.uuid4().hex[:8]}"
    posted = await post(write, system, thread, "wildcard prefix target")
    wait = {"min_position": posted["position"], "commentable_id": thread}
    assert (await search(read, q="targ*", **wait))["comments"] == []  # no prefix queries
    assert (await search(read, q="targat~2", **wait))["comments"] == []  # no fuzzy queries
    found = await search(read, q='"prefix target" -nothing', **wait)
    assert [c["id"] for c in found["comments"]] == [posted["id"]]  # phrases and NOT work


async def test_a_deleted_comment_is_never_found(system: Settings, http: Any) -> None:
    write, read = http
    thread = f"s-{uuid.uuid4().hex[:8]}"
    word = f"gone{uuid.uuid4().hex[:8]}"
    posted = await post(write, system, thread, f"soon {word}")
    assert (await search(read, q=word, min_position=posted["position"]))["comments"]
    gone = await write.delete(f"/api/comments/{posted['id']}", headers=token(system, "alice"))
    assert gone.status_code == 200, gone.text
    assert (await search(read, q=word, min_position=gone.json()["position"]))["comments"] == []


async def test_highlights_escape_the_comments_own_markup(system: Settings, http: Any) -> None:
    write, read = http
    thread = f"s-{uuid.uuid4().hex[:8]}"
    posted = await post(write, system, thread, "<script>alert(1)</script> markup here")
    found = await search(read, q="markup", min_position=posted["position"], commentable_id=thread)
    assert found["comments"][0]["highlights"] == [
        "&lt;script&gt;alert(1)&lt;&#x2F;script&gt; <em>markup</em> here"
    ]
