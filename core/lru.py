"""A least-recently-added map of serialised records, bounded by count *and* by size.

The decision records kept in memory for ``GET /v1/decisions/{id}`` (the Ingress replica's
recent decisions, the DecisionLog deployment's recent records) differ in size by two orders
of magnitude with the number of candidates a surface keeps (a few KB to ~60 KB of JSON): a
bound in records alone lets a replica's memory grow by gigabytes before it plateaus (the soak
of issue 15). The size bound makes the plateau a number an operator chooses
(``args.decision_lru_mb`` in ``configs/serve.yaml``), reached within the first minutes.
"""

from __future__ import annotations

from collections.abc import Hashable

_OVERHEAD = 100
"""Bytes charged per entry beyond its value's length (object headers, the key tuple, the
dict slot): roughly what CPython spends, so that many tiny values are bounded too."""


class SizedLRU:
    """``key → bytes | str``; the oldest entries go first once more than ``max_items``
    entries or more than ``max_bytes`` bytes (value lengths plus a fixed overhead each) are
    held. A value larger than ``max_bytes`` alone is not kept. Not thread-safe."""

    def __init__(self, max_items: int, max_bytes: int):
        if max_items < 1 or max_bytes < 1:
            raise ValueError("max_items and max_bytes must be positive")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.bytes = 0
        self._data: dict[Hashable, bytes | str] = {}  # insertion order: oldest first

    def put(self, key: Hashable, value: bytes | str) -> None:
        old = self._data.pop(key, None)
        if old is not None:
            self.bytes -= len(old) + _OVERHEAD
        size = len(value) + _OVERHEAD
        if size > self.max_bytes:
            return
        self._data[key] = value
        self.bytes += size
        while len(self._data) > self.max_items or self.bytes > self.max_bytes:
            oldest = next(iter(self._data))
            self.bytes -= len(self._data.pop(oldest)) + _OVERHEAD

    def get(self, key: Hashable) -> bytes | str | None:
        return self._data.get(key)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data
