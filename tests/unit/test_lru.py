"""core.lru.SizedLRU: oldest out first, by count and by size."""

import pytest

from core.lru import SizedLRU


def test_oldest_entries_leave_first_by_count_and_by_size():
    lru = SizedLRU(max_items=3, max_bytes=10_000)
    for i in range(5):
        lru.put(i, b"x" * 10)
    assert len(lru) == 3 and lru.get(0) is None and lru.get(4) == b"x" * 10
    by_size = SizedLRU(max_items=1_000, max_bytes=3 * (1_000 + 100))
    for i in range(10):
        by_size.put(i, "y" * 1_000)
    assert len(by_size) == 3 and [by_size.get(i) is not None for i in (6, 7, 8, 9)] == [False, True, True, True]
    assert by_size.bytes == 3 * 1_100


def test_a_replaced_value_is_counted_once_and_a_huge_one_is_not_kept():
    lru = SizedLRU(max_items=10, max_bytes=1_000)
    lru.put("k", b"a" * 100)
    lru.put("k", b"b" * 200)
    assert len(lru) == 1 and lru.bytes == 300 and lru.get("k") == b"b" * 200
    lru.put("big", b"z" * 5_000)
    assert "big" not in lru and "k" in lru
    with pytest.raises(ValueError):
        SizedLRU(0, 10)
