"""Query API handlers: Redis for the hot path, Elasticsearch for bodies and search."""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal, NamedTuple
from uuid import UUID

import msgspec
from elasticsearch import ApiError, TransportError
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.exceptions import ValidationException
from litestar.params import FromPath, HeaderParameter, Parameter, QueryParameter
from redis.exceptions import (
    BusyLoadingError,
    MaxConnectionsError,
    OutOfMemoryError,
    ReadOnlyError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from kernel.redis_client import CLUSTER_DOWN
from kernel.web_contract import BEARER, problems, response_headers
from query_api.consistency import NotYet, refuse_beyond_head, wait_for_position
from query_api.cursors import SearchCursor
from query_api.es_reads import SearchQuery, SearchSort
from query_api.redis_reads import RedisLost, Score
from query_api.views import (
    CommentOut,
    CommentPage,
    FoundComment,
    MyVotes,
    ScoreOut,
    ScoresOut,
    SearchResults,
    comment_out,
)
from schemas.api import COMMENTABLE_ID_MAX, COMMENTABLE_ID_PATTERN, parse_timestamp

# Redis is down, busy, full or lost its data: reads fall back or answer 503. Any other Redis
# error is a bug, and says so (500), instead of passing for an outage.
STORE_DOWN = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ReadOnlyError,
    OutOfMemoryError,
    MaxConnectionsError,
    RedisLost,
    OSError,
    *CLUSTER_DOWN,
)
INDEX_DOWN = (ApiError, TransportError, OSError)
_IDS = re.compile(r"^[0-9a-fA-F-]{36}$")

SortOrder = Literal["top", "new", "best", "controversial", "hot"]
Sort = Annotated[SortOrder, QueryParameter(description="the order of the list")]
# Not Optional: litestar drops the bounds of an optional parameter from the schema. 0: none.
MinPosition = Annotated[
    int,
    QueryParameter(
        name="min_position",
        ge=0,
        le=10**18,
        required=False,
        description="The highest position this client has seen (X-Tally-Position of an answer)"
        ": the answer reflects every event at or below it (or 504 after a short wait); a"
        " position no command answered with is refused at once (400)",
    ),
]
MinPositionHeader = Annotated[
    str,
    HeaderParameter(
        name="X-Tally-Min-Position",
        required=False,
        pattern=r"^[0-9]{0,18}$",  # ASCII digits only: "²".isdigit() is true
        description="Same as min_position, as a header",
    ),
]
_UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
CommentIds = Annotated[
    str,
    Parameter(
        pattern=rf"^{_UUID}(,{_UUID}){{0,499}}$",
        description="1 to 500 comment ids, comma-separated",
    ),
]
PageCursor = Annotated[
    str,
    Parameter(
        pattern=r"^([A-Za-z0-9_-]{22,512})?$",  # empty: the first page
        required=False,
        description="next_cursor of the previous page (opaque, signed, bound to its list)",
    ),
]
IfNoneMatch = Annotated[
    str,
    HeaderParameter(name="If-None-Match", required=False, description="An ETag of an earlier page"),
]
# A commentable id as the write side takes it: anything else cannot have comments.
CommentablePath = Annotated[
    str,
    Parameter(
        pattern=COMMENTABLE_ID_PATTERN,
        max_length=COMMENTABLE_ID_MAX,
        description="The commentable's id: 1 to 128 of A-Z a-z 0-9 _ . : -",
    ),
]
_OPTIONAL_BEARER: list[dict[str, list[str]]] = [{}, *BEARER]  # with a token: my_vote
_READ_ERRORS = (400, 401, 503, 504)
# What both ranked lists (top level, replies) document alike.
_A_PAGE: dict[str, Any] = {
    "security": _OPTIONAL_BEARER,
    "response_description": "A page",
    "response_headers": response_headers("X-Tally-Position", "X-Tally-Degraded", "ETag"),
}


class UnknownComment(LookupError):
    """No read model knows this comment."""


class Unavailable(RuntimeError):
    """The store this read needs is down."""


def wanted_position(query_value: int, header_value: str) -> int | None:
    """``min_position`` from the query string or the ``X-Tally-Min-Position`` header (``None``
    when neither asks for one)."""
    return query_value or (int(header_value) if header_value else None)


def parse_ids(raw: str, limit: int = 500) -> list[str]:
    """A comma-separated list of comment ids (UUIDs), at most ``limit``."""
    ids = [i.strip().lower() for i in raw.split(",") if i.strip()]
    if not ids or len(ids) > limit:
        raise msgspec.ValidationError(f"give 1 to {limit} comment ids")
    parsed: list[str] = []
    bad: list[str] = []
    for raw in ids:
        try:
            parsed.append(str(UUID(raw)) if _IDS.match(raw) else "")
        except ValueError:  # 36 dashes match the pattern but are no UUID
            parsed.append("")
        if not parsed[-1]:
            bad.append(raw[:40])
    if bad:
        raise msgspec.ValidationError(f"not comment ids: {', '.join(bad[:5])}")
    return list(dict.fromkeys(parsed))


async def _viewer(request: Request[Any, Any, Any], state: State) -> str | None:
    """The user of a bearer token, if one is sent (a bad one is a 401, not anonymity)."""
    header = request.headers.get("authorization")
    return None if header is None else await state.verifier.user_of(header)


async def _my_votes(state: State, viewer: str | None, ids: list[str]) -> dict[str, int]:
    """The viewer's vote on each comment; ``{}`` without a viewer or when Redis is down."""
    if viewer is None or not ids:
        return {}
    votes: dict[str, int] = {}
    with contextlib.suppress(*STORE_DOWN):
        votes = await state.redis_reads.my_votes(viewer, ids)
    return votes


async def _reach(
    state: State,
    wanted: int,
    current: Callable[[], Awaitable[int]],
    projection: str = "redis",
    asked: bool = True,
) -> int:
    """Wait (bounded) until ``current()`` or ``projection``'s announced mark reaches ``wanted``.
    A position the client ``asked`` for is first refused at once (400) if no command answered
    with it; one read from a read model (a comment's own) is real and only waited for."""
    watch = state.live.watch
    if asked:
        with contextlib.suppress(*STORE_DOWN):  # without Redis the head is unknown: wait
            await refuse_beyond_head(
                wanted, watch, lambda: state.redis_reads.progress.head(projection)
            )
    wait = state.config.read_wait_ms / 1000
    return await wait_for_position(wanted, current, wait, watch, projection)


async def _counts(state: State, comment_id: str, wanted: int | None) -> tuple[Score | None, bool]:
    """Live counts from Redis (waiting for ``wanted``), or ``(None, True)`` if Redis is down."""
    reads = state.redis_reads
    try:
        if wanted:

            async def position() -> int:
                # The comment's own position, or the projection's low-water mark: either at
                # ``wanted`` means every event up to it shows.
                found = await reads.score(comment_id)
                own = found.position if found else 0
                return own if own >= wanted else max(own, await reads.low_water())

            await _reach(state, wanted, position)
        return await reads.score(comment_id), False
    except STORE_DOWN:
        return None, True


async def _document(state: State, comment_id: str, wanted: int | None) -> dict[str, Any] | None:
    """The comment's stored body, or ``None``; with ``wanted``, once the comments projection
    has applied the comment's events up to it (a projector of its own, maybe behind Redis)."""
    found: dict[str, Any] | None = None

    async def position() -> int:
        nonlocal found
        found = (await state.es_reads.comments([comment_id], fresh=bool(wanted))).get(comment_id)
        own = int(found.get("position", 0)) if found else 0
        if wanted is None or own >= wanted:
            return own
        with contextlib.suppress(*STORE_DOWN):  # the marks live in Redis; without, wait on own
            own = max(own, await state.redis_reads.low_water("comments"))
        return own

    try:
        if wanted:
            await _reach(state, wanted, position, "comments")
        else:
            await position()
    except INDEX_DOWN:
        return None
    return found


def _json(body: Any, headers: dict[str, str]) -> Response[Any]:
    return Response(msgspec.json.encode(body), media_type="application/json", headers=headers)


@get(
    "/api/comments/{comment_id:uuid}",
    operation_id="get_comment",
    summary="One comment",
    security=_OPTIONAL_BEARER,
    response_description="The comment",
    responses=problems(*_READ_ERRORS, 404),
    response_headers=response_headers("X-Tally-Position", "X-Tally-Stale"),
)
async def get_comment(
    request: Request[Any, Any, Any],
    state: State,
    comment_id: FromPath[UUID],
    min_position: MinPosition = 0,
    min_position_header: MinPositionHeader = "",
) -> Response[CommentOut]:
    """A comment with its live counts, reply count and (with a bearer token) the viewer's vote.

    A deleted comment answers with ``deleted: true`` and no content or author."""
    cid = str(comment_id)
    viewer = await _viewer(request, state)
    wanted = wanted_position(min_position, min_position_header)
    counts, _ = await _counts(state, cid, wanted)
    doc = await _document(state, cid, wanted)
    if doc is None and counts is None:
        raise UnknownComment(f"comment {cid} not found")
    mine = (await _my_votes(state, viewer, [cid])).get(cid) if viewer else None
    headers = {
        "X-Tally-Position": str(counts.position if counts else doc.get("position", 0) if doc else 0)
    }
    if counts is None:  # the counts are the comment index's, a little behind Redis's
        headers["X-Tally-Stale"] = "true"
    return _json(comment_out(cid, doc, counts, mine), headers)


@get(
    "/api/comments/{comment_id:uuid}/score",
    operation_id="get_score",
    summary="One score",
    response_description="Its counts",
    responses=problems(400, 404, 503, 504),
    response_headers=response_headers("X-Tally-Position", "X-Tally-Stale"),
)
async def get_score(
    request: Request[Any, Any, Any],
    state: State,
    comment_id: FromPath[UUID],
    min_position: MinPosition = 0,
    min_position_header: MinPositionHeader = "",
) -> Response[ScoreOut]:
    """Live counts of one comment; from Elasticsearch, marked stale, when Redis is down."""
    cid = str(comment_id)
    counts, stale = await _counts(state, cid, wanted_position(min_position, min_position_header))
    if counts is not None:
        return _json(
            ScoreOut(cid, counts.up, counts.down, counts.score),
            {"X-Tally-Position": str(counts.position)},
        )
    # Down, or it does not know the comment (yet, or any more: a flushed Redis is only noticed
    # within half a second): the comment index may still have it. Never a 404 for a comment
    # that exists.
    try:
        doc = (await state.es_reads.comments([cid])).get(cid)
    except INDEX_DOWN as exc:
        if stale:
            raise Unavailable("neither Redis nor Elasticsearch answers") from exc
        doc = None
    if doc is None:
        raise UnknownComment(f"comment {cid} not found")
    return _json(
        ScoreOut(cid, doc["up"], doc["down"], doc["score"]),
        {"X-Tally-Position": str(doc["position"]), "X-Tally-Stale": "true"},
    )


@get(
    "/api/scores",
    operation_id="get_scores",
    summary="Many scores at once",
    response_description="Their counts",
    responses=problems(400, 503, 504),
    response_headers=response_headers("X-Tally-Position", "X-Tally-Stale"),
)
async def get_scores(
    request: Request[Any, Any, Any],
    state: State,
    ids: CommentIds,
    min_position: MinPosition = 0,
    min_position_header: MinPositionHeader = "",
) -> Response[ScoresOut]:
    """Live counts of up to 500 comments (``ids`` comma-separated)."""
    wanted_ids = parse_ids(ids)
    headers: dict[str, str] = {}
    try:
        wanted = wanted_position(min_position, min_position_header)
        reached = await _wait_low_water(state, wanted)
        found = await state.redis_reads.scores(wanted_ids)
        scores = {c: ScoreOut(c, s.up, s.down, s.score) for c, s in found.items()}
        headers["X-Tally-Position"] = str(reached)
    except STORE_DOWN:
        try:
            docs = await state.es_reads.comments(wanted_ids)
        except INDEX_DOWN as exc:
            raise Unavailable("neither Redis nor Elasticsearch answers") from exc
        scores = {c: ScoreOut(c, d["up"], d["down"], d["score"]) for c, d in docs.items()}
        headers["X-Tally-Stale"] = "true"
    body = ScoresOut(
        [scores[c] for c in wanted_ids if c in scores], [c for c in wanted_ids if c not in scores]
    )
    return _json(body, headers)


async def _wait_low_water(state: State, wanted: int | None) -> int:
    """Wait until the Redis projection's low-water mark reaches ``wanted``; return the mark."""
    reads = state.redis_reads
    if wanted:
        return await _reach(state, wanted, reads.low_water)
    return int(await reads.low_water())


@get(
    "/api/commentables/{commentable_id:str}/comments",
    operation_id="list_comments",
    summary="A commentable's top-level comments, ranked",
    responses=problems(*_READ_ERRORS, 304),
    **_A_PAGE,
)
async def list_comments(
    request: Request[Any, Any, Any],
    state: State,
    commentable_id: CommentablePath,
    min_position: MinPosition = 0,
    min_position_header: MinPositionHeader = "",
    sort: Sort = "top",
    limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
    cursor: PageCursor = "",
    if_none_match: IfNoneMatch = "",
) -> Response[CommentPage]:
    """A page of top-level comments sorted by top, new, best, controversial or hot, with a
    stable cursor; ``comment_count`` counts the whole commentable, replies included."""
    wanted = wanted_position(min_position, min_position_header)
    page = _PageRequest(commentable_id, None, sort, limit, cursor, wanted, if_none_match)
    return await _ranked_page(request, state, page)


@get(
    "/api/comments/{comment_id:uuid}/replies",
    operation_id="list_replies",
    summary="A comment's replies, ranked",
    responses=problems(*_READ_ERRORS, 304, 404),
    **_A_PAGE,
)
async def list_replies(
    request: Request[Any, Any, Any],
    state: State,
    comment_id: FromPath[UUID],
    min_position: MinPosition = 0,
    min_position_header: MinPositionHeader = "",
    sort: Sort = "top",
    limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
    cursor: PageCursor = "",
    if_none_match: IfNoneMatch = "",
) -> Response[CommentPage]:
    """A page of the direct replies to a comment, with the same sorts and cursors as lists.

    The replies of a deleted comment stay readable."""
    cid = str(comment_id)
    wanted = wanted_position(min_position, min_position_header)
    try:
        await _wait_low_water(state, wanted)
        (commentable_id,) = await state.redis_reads.commentables([cid])
    except STORE_DOWN as exc:
        raise Unavailable("rankings live in Redis, which does not answer") from exc
    if commentable_id is None:
        raise UnknownComment(f"comment {cid} not found")
    page = _PageRequest(commentable_id, cid, sort, limit, cursor, wanted, if_none_match)
    return await _ranked_page(request, state, page)


class _PageRequest(NamedTuple):
    commentable_id: str
    parent_id: str | None  # None: the top level
    sort: str
    limit: int
    cursor: str  # empty: the first page
    wanted: int | None  # min_position
    if_none_match: str


async def _ranked_page(
    request: Request[Any, Any, Any], state: State, asked: _PageRequest
) -> Response[Any]:
    """One page of a list (top level, or a comment's replies) with bodies, counts and the
    viewer's votes, once the projections reached the asked position."""
    reads = state.redis_reads
    viewer = await _viewer(request, state)
    commentable_id, parent_id, wanted = asked.commentable_id, asked.parent_id, asked.wanted
    decoded = None
    if asked.cursor:
        decoded = reads.cursors.decode(asked.cursor, commentable_id, asked.sort, parent_id or "")
    try:
        position = await _wait_low_water(state, wanted)
        page = await reads.page(
            commentable_id, asked.sort, asked.limit, decoded, parent_id, position, wanted or 0
        )
        counts = await reads.scores(page.ids)
        total = await reads.comment_count(commentable_id)
    except STORE_DOWN as exc:
        raise Unavailable("rankings live in Redis, which does not answer") from exc
    mine = await _my_votes(state, viewer, page.ids)
    headers = {"X-Tally-Position": str(position), "Cache-Control": "max-age=1"}
    if viewer is not None:
        headers["Cache-Control"] = "private, max-age=1"
        headers["Vary"] = "Authorization"
    try:
        docs = await _documents(state, page.ids, wanted, counts)
    except INDEX_DOWN:
        docs = {}
        headers["X-Tally-Degraded"] = "elasticsearch"
    comments = [
        comment_out(c, docs.get(c), counts.get(c), mine.get(c) if viewer else None)
        for c in page.ids
    ]
    body = msgspec.json.encode(CommentPage(comments, page.next_cursor, total))
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers["ETag"] = etag
    if asked.if_none_match == etag:
        return Response(b"", status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


async def _documents(
    state: State, comment_ids: list[str], wanted: int | None, counts: dict[str, Score]
) -> dict[str, dict[str, Any]]:
    """Stored bodies of the comments Redis listed; with ``wanted``, once the comments
    projection's mark has reached it. The comments projector is a process of its own, maybe
    behind Redis: a body still missing is waited for (boundedly) until that projector has
    reached the comment's own position, so a list does not show a comment without its text."""

    async def comments_reach(position: int, asked: bool) -> None:
        with contextlib.suppress(NotYet, *STORE_DOWN):
            low_water = state.redis_reads.low_water
            await _reach(state, position, lambda: low_water("comments"), "comments", asked)

    if wanted:
        await comments_reach(wanted, asked=True)
    es = state.es_reads
    docs: dict[str, dict[str, Any]] = await es.comments(comment_ids, fresh=bool(wanted))
    missing = [c for c in comment_ids if c not in docs and c in counts]
    if missing:
        await comments_reach(max(counts[c].position for c in missing), asked=False)
        docs |= await es.comments(missing, fresh=True)
    return docs


SearchCursorParam = Annotated[
    str,
    QueryParameter(
        name="cursor",
        pattern=r"^([A-Za-z0-9_-]{22,512})?$",  # empty: the first page
        required=False,
        description="next_cursor of the previous page of the same search (opaque, signed)",
    ),
]


# RFC 3339, time zone included: litestar alone would also take "0" (1970) or a naive time.
_TIME: dict[str, Any] = {"schema_extra": {"format": "date-time"}, "max_length": 64}


def _instant(name: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_timestamp(text)
    except ValueError as exc:
        raise ValidationException(
            extra=[{"key": name, "message": str(exc), "source": "query"}]
        ) from None


@get(
    "/api/comments/search",
    operation_id="search_comments",
    summary="Full-text search",
    security=_OPTIONAL_BEARER,
    response_description="The best matches, with the matched words highlighted",
    response_headers=response_headers("X-Tally-Position", "X-Tally-Stale"),
    responses=problems(400, 401, 503, 504),
)
async def search_comments(
    request: Request[Any, Any, Any],
    state: State,
    q: Annotated[str, Parameter(min_length=1, max_length=200)],
    commentable_id: Annotated[
        str | None, Parameter(pattern=COMMENTABLE_ID_PATTERN, max_length=COMMENTABLE_ID_MAX)
    ] = None,
    author_id: Annotated[
        str | None, Parameter(max_length=128, description="only this user's comments")
    ] = None,
    since: Annotated[
        str | None, Parameter(description="only comments created at or after this time", **_TIME)
    ] = None,
    until: Annotated[
        str | None, Parameter(description="only comments created before this time", **_TIME)
    ] = None,
    sort: Annotated[
        SearchSort, Parameter(description="relevance (best match first) or new (newest first)")
    ] = "relevance",
    limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
    cursor: SearchCursorParam = "",
    min_position: MinPosition = 0,
    min_position_header: MinPositionHeader = "",
) -> Response[SearchResults]:
    """Comments whose content matches ``q`` (words, "phrases", -exclusions, a | b; any text
    is safe). Deleted comments are never found. With ``min_position``, every comment written
    at or below it is searchable in the answer (or 504 after a short wait)."""
    viewer = await _viewer(request, state)
    query = SearchQuery(
        text=q,
        commentable_id=commentable_id,
        author_id=author_id,
        since=_instant("since", since),
        until=_instant("until", until),
        sort=sort,
    )
    after = None
    if cursor:
        after = state.redis_reads.cursors.decode_search(cursor, query.digest()).after
    headers: dict[str, str] = {}
    wanted = wanted_position(min_position, min_position_header)
    visible_since = None
    if wanted:
        try:
            reached = await _reach(
                state, wanted, lambda: state.redis_reads.low_water("comments"), "comments"
            )
            headers["X-Tally-Position"] = str(reached)
        except STORE_DOWN:  # the marks live in Redis: refresh anyway, and say so
            headers["X-Tally-Stale"] = "true"
        visible_since = time.monotonic()
    try:
        hits, more = await state.es_reads.search(query, limit, after, visible_since)
    except INDEX_DOWN as exc:
        raise Unavailable("search lives in Elasticsearch, which does not answer") from exc
    ids = [hit.document["comment_id"] for hit in hits]
    try:
        counts = await state.redis_reads.scores(ids)
    except STORE_DOWN:
        counts = {}
    mine = await _my_votes(state, viewer, ids)
    found = []
    for comment_id, hit in zip(ids, hits, strict=True):
        out = comment_out(comment_id, hit.document, counts.get(comment_id), mine.get(comment_id))
        if not out.deleted:
            fields = msgspec.structs.asdict(out)
            fields["my_vote"] = fields["my_vote"] if viewer else None
            found.append(FoundComment(**fields, highlights=hit.highlights))
    next_cursor = None
    if more and hits:
        next_cursor = state.redis_reads.cursors.encode(
            SearchCursor(search=query.digest(), after=hits[-1].sort)
        )
    return _json(SearchResults(found, next_cursor), headers)


@get(
    "/api/me/votes",
    operation_id="get_my_votes",
    summary="The caller's votes",
    security=BEARER,
    response_description="The caller's votes",
    responses=problems(*_READ_ERRORS),
)
async def get_my_votes(
    request: Request[Any, Any, Any],
    state: State,
    comment_ids: CommentIds,
    min_position: MinPosition = 0,
    min_position_header: MinPositionHeader = "",
) -> Response[MyVotes]:
    """The caller's vote (-1, 0 or 1) on each given comment, from the Redis projection, once it
    has reached ``min_position``."""
    user_id = await state.verifier.user_of(request.headers.get("authorization"))
    wanted_ids = parse_ids(comment_ids)
    try:
        await _wait_low_water(state, wanted_position(min_position, min_position_header))
        votes = await state.redis_reads.my_votes(user_id, wanted_ids)
    except STORE_DOWN as exc:
        raise Unavailable("votes live in Redis, which does not answer") from exc
    return _json(MyVotes(votes), {})


ROUTES = [
    get_comment,
    get_score,
    get_scores,
    list_comments,
    list_replies,
    search_comments,
    get_my_votes,
]
