"""A cache bounded in bytes keeps at most its bytes, whatever size and number of entries."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kernel.bounded_cache import BoundedCache


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 400)), max_size=200))
def test_the_cache_never_holds_more_than_its_bytes(puts: list[tuple[int, int]]) -> None:
    cache: BoundedCache[int, int] = BoundedCache(1000)
    for key, size in puts:
        cache.put(key, size, size, expires=10.0)
        assert cache.size <= 1000
        assert cache.size == sum(s for _, (_, _, s) in cache._entries.items())
    if puts:
        key, size = puts[-1]
        assert cache.get(key, now=0.0) == size  # the newest is always kept


def test_entries_expire_and_the_oldest_go_first() -> None:
    cache: BoundedCache[str, str] = BoundedCache(10)
    cache.put("a", "A", 4, expires=5.0)
    cache.put("b", "B", 4, expires=50.0)
    assert cache.get("a", now=6.0) is None and cache.get("b", now=6.0) == "B"
    cache.put("c", "C", 4, expires=50.0)  # over 10 bytes: "a", the oldest, goes
    assert cache.get("a", now=0.0) is None and len(cache) == 2
    cache.put("huge", "H", 11, expires=50.0)  # larger than the whole cache: not kept
    assert cache.get("huge", now=0.0) is None and len(cache) == 2
