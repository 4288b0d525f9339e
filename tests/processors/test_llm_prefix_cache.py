"""The batch engine's prefix cache bookkeeping (llm/prefix_cache.py): longest shared prefix,
containment, LRU eviction by tokens and by entries, moving an entry to another id."""

from __future__ import annotations

import pytest

from openeas.processors.llm.prefix_cache import PrefixCache, common_prefix


def test_common_prefix_across_the_compare_chunks() -> None:
    a = list(range(300))
    assert common_prefix(a, a) == 300
    assert common_prefix(a, a[:130]) == 130
    b = [*a[:200], -1, *a[201:]]
    assert common_prefix(a, b) == 200
    assert common_prefix(a, [5]) == 0
    assert common_prefix([], a) == 0


def test_best_picks_the_longest_shared_prefix_and_touch_keeps_it() -> None:
    cache = PrefixCache(max_tokens=100, max_entries=3)
    assert cache.best([1, 2, 3]) == (-1, 0)
    assert cache.add(7, [1, 2, 3, 4]) == []
    assert cache.add(8, [1, 2, 9]) == []
    assert cache.best([1, 2, 3, 4, 5]) == (7, 4)
    assert cache.best([1, 2, 9, 9]) == (8, 3)
    assert 7 in cache and 9 not in cache
    cache.touch(7)  # 8 is now least recently used
    assert cache.add(9, [5]) == []
    assert cache.add(10, [6]) == [8]
    assert len(cache) == 3 and cache.tokens == 6


def test_contained_entries_are_not_kept_twice() -> None:
    cache = PrefixCache(max_tokens=100, max_entries=4)
    cache.add(1, [1, 2, 3])
    # a longer sequence with the same start replaces the shorter entry
    assert cache.add(2, [1, 2, 3, 4, 5]) == [1]
    # a shorter one that is already contained is dropped: its own id comes back
    assert cache.add(3, [1, 2]) == [3]
    assert len(cache) == 1 and cache.tokens == 5


def test_token_bound_evicts_least_recently_used() -> None:
    cache = PrefixCache(max_tokens=10, max_entries=8)
    cache.add(1, [1] * 4)
    cache.add(2, [2] * 4)
    assert cache.add(3, [3] * 4) == [1]
    assert cache.tokens == 8
    assert cache.add(4, [4] * 11) == [4]  # larger than the whole cache: not kept
    assert cache.pop_lru() == 2 and cache.pop_lru() == 3 and cache.pop_lru() is None


def test_negative_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        PrefixCache(max_tokens=-1, max_entries=1)


def test_move_keeps_the_lru_place_and_take_forgets() -> None:
    cache = PrefixCache(max_tokens=100, max_entries=3)
    cache.add(0, [1, 2])
    cache.add(1, [3, 4, 5])
    cache.move(0, 9)  # slot 0's cells copied to spare id 9: still the least recently used
    assert 0 not in cache and cache.best([1, 2, 7]) == (9, 2)
    assert cache.take(1) == [3, 4, 5] and cache.tokens == 2
    assert cache.pop_lru() == 9 and len(cache) == 0
