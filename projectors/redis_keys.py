"""The Redis key schema, defined once for the projection, the query API and ``tally verify``.

Per generation ``g`` (a rebuild fills a new one and switches; see ``projectors.generations``),
every key of one commentable shares the hash tag ``{<commentable>}``, so a Lua call over them
works on Redis Cluster too:

- ``tally:g<g>:{<commentable>}:c:<comment>``: hash ``up down score pos created deleted parent
  depth replies`` (``replies``: how many replies were posted to it)
- ``tally:g<g>:{<commentable>}:v:<comment>``: hash user -> vote (-1 or 1)
- ``tally:g<g>:{<commentable>}:rank:<sort>``: the top-level comments, one sorted set per sort
  (top, new, best, controversial, hot); ``...:r:<parent>:rank:<sort>``: a comment's replies
- ``tally:g<g>:{<commentable>}:count``: how many comments (replies included) were posted
- ``tally:g<g>:{<commentable>}:snap:<list>:<sort>:<bucket>``: ranking snapshots readers page
- ``tally:g<g>:where:<comment>``: the comment's commentable (so a reader can find the keys)
- ``tally:g<g>:intact``: set when the generation was started from nothing (or built by a
  rebuild); its absence means Redis lost the generation's data

Outside generations: ``tally:generation:<base>`` (the pointer), ``tally:live:<commentable>``
(pub/sub of score changes), ``tally:lwm:{<deployment>}:<projection>`` (each projection's
low-water mark, for read-your-writes; ``deployment`` is the consumer-group prefix; one slot, so
a reader gets them all in one MGET).
"""

from __future__ import annotations

from projectors.ranking import SORTS


def prefix(generation: str, commentable_id: str) -> str:
    """The key prefix of one commentable in one generation."""
    return f"tally:g{generation}:{{{commentable_id}}}:"


def comment_key(generation: str, commentable_id: str, comment_id: object) -> str:
    """A comment's counters."""
    return f"{prefix(generation, commentable_id)}c:{comment_id}"


def votes_key(generation: str, commentable_id: str, comment_id: object) -> str:
    """A comment's votes, user -> -1 or 1."""
    return f"{prefix(generation, commentable_id)}v:{comment_id}"


def list_prefix(generation: str, commentable_id: str, parent_id: object | None = None) -> str:
    """The key prefix of one list: the top-level comments, or the replies to ``parent_id``."""
    base = prefix(generation, commentable_id)
    return base if parent_id is None else f"{base}r:{parent_id}:"


def ranking_key(
    generation: str, commentable_id: str, sort: str, parent_id: object | None = None
) -> str:
    """A list's ranking by ``sort``."""
    return f"{list_prefix(generation, commentable_id, parent_id)}rank:{sort}"


def ranking_keys(
    generation: str, commentable_id: str, parent_id: object | None = None
) -> list[str]:
    """A list's rankings, one per sort, in ``SORTS`` order."""
    return [ranking_key(generation, commentable_id, sort, parent_id) for sort in SORTS]


def comment_block(
    generation: str, commentable_id: str, comment_id: object, parent_id: object | None
) -> list[str]:
    """The 8 keys the Lua scripts take per comment: its hash, its votes, the five rankings of
    its list, and its parent's hash (its own at the top level)."""
    own = comment_key(generation, commentable_id, comment_id)
    return [
        own,
        votes_key(generation, commentable_id, comment_id),
        *ranking_keys(generation, commentable_id, parent_id),
        comment_key(generation, commentable_id, parent_id) if parent_id else own,
    ]


def counts_block(
    generation: str, commentable_id: str, comment_id: object, parent_id: object | None
) -> list[str]:
    """``comment_block`` without the rankings: the 3 keys a call that only counts takes."""
    own = comment_key(generation, commentable_id, comment_id)
    return [
        own,
        votes_key(generation, commentable_id, comment_id),
        comment_key(generation, commentable_id, parent_id) if parent_id else own,
    ]


def snapshot_name(parent_id: object | None, sort: str, bucket: int) -> str:
    """The name of a list's ranking snapshot of one time bucket (what a cursor carries)."""
    listed = "root" if parent_id is None else parent_id
    return f"snap:{listed}:{sort}:{bucket}"


def snapshot_key(generation: str, commentable_id: str, name: str) -> str:
    """The key of the snapshot called ``name``."""
    return f"{prefix(generation, commentable_id)}{name}"


def count_key(generation: str, commentable_id: str) -> str:
    """How many comments were posted on a commentable."""
    return f"{prefix(generation, commentable_id)}count"


def where_key(generation: str, comment_id: object) -> str:
    """The key holding a comment's commentable."""
    return f"tally:g{generation}:where:{comment_id}"


def where_pattern(generation: str) -> str:
    """A SCAN pattern for every ``where`` key of a generation."""
    return f"tally:g{generation}:where:*"


def intact_key(generation: str) -> str:
    """The marker of a generation whose data is whole."""
    return f"tally:g{generation}:intact"


def generation_pattern(generation: str) -> str:
    """A SCAN pattern for every key of a generation (and of no other)."""
    return f"tally:g{generation}:*"


def pointer_key(base: str) -> str:
    """The hash naming the live generation of the family ``base``."""
    return f"tally:generation:{base}"


def live_channel(commentable_id: str) -> str:
    """The pub/sub channel with a commentable's score changes."""
    return f"tally:live:{commentable_id}"


def progress_channel(deployment: str) -> str:
    """Where new low-water marks and heads of ``deployment`` are announced ("<name> <mark>")."""
    return f"tally:progress:{{{deployment}}}"


def head_key(deployment: str) -> str:
    """Where the command API records the highest position it has answered with."""
    return f"tally:head:{{{deployment}}}"


def low_water_key(deployment: str, projection: str) -> str:
    """Where ``projection`` of ``deployment`` publishes its low-water mark."""
    return f"tally:lwm:{{{deployment}}}:{projection}"
