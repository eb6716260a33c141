"""Item-to-item neighbours from co-occurrence in the event log.

Two items co-occur when the same user interacted positively with both within ``window_hours``
of each other. Each (user, pair) counts once, so one heavy user cannot make a pair. The score
of neighbour ``j`` for item ``i`` is the cosine of their user sets,
``c_ij / sqrt(n_i * n_j)`` (``n_i`` = users who interacted with ``i``), which stops globally
popular items from being everyone's nearest neighbour.

Invariants: neighbour lists are sorted by score, then count, then item id (deterministic);
an item is never its own neighbour; only events of the given tenant are read.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from core.clock import column_micros
from core.schema import POSITIVE_EVENT_TYPES


@dataclass(frozen=True)
class Neighbour:
    item_id: str
    score: float
    count: int


class ItemToItemIndex:
    def __init__(self, neighbours: dict[str, tuple[Neighbour, ...]], version: str):
        self.neighbours = neighbours
        self.version = version

    def get(self, item_id: str) -> tuple[Neighbour, ...]:
        return self.neighbours.get(item_id, ())

    def __len__(self) -> int:
        return len(self.neighbours)

    @classmethod
    def build(
        cls,
        events: pa.Table,
        *,
        tenant_id: str | None = None,
        window_hours: float = 24.0,
        max_neighbours: int = 50,
        max_user_items: int = 200,
        version: str = "cooc",
    ) -> ItemToItemIndex:
        """``max_user_items`` bounds the quadratic pair count per user to their latest items."""
        if tenant_id is not None and "tenant_id" in events.column_names:
            events = events.filter(pc.equal(events["tenant_id"], tenant_id))
        events = events.filter(
            pc.is_in(events["event_type"], pa.array(sorted(POSITIVE_EVENT_TYPES)))
        ).sort_by([("user_id", "ascending"), ("ts", "ascending")])
        users = events["user_id"].to_pylist()
        items = events["item_id"].to_pylist()
        ts = column_micros(events["ts"]).to_pylist()
        window_us = window_hours * 3600e6

        by_user: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for u, i, t in zip(users, items, ts, strict=True):
            by_user[u].append((t, i))

        item_users: dict[str, int] = defaultdict(int)
        pair_users: dict[tuple[str, str], int] = defaultdict(int)
        for seq in by_user.values():
            seq = seq[-max_user_items:]
            for i in {item for _, item in seq}:
                item_users[i] += 1
            pairs: set[tuple[str, str]] = set()
            start = 0
            for end in range(len(seq)):
                t_end, i_end = seq[end]
                while t_end - seq[start][0] > window_us:
                    start += 1
                for k in range(start, end):
                    i_k = seq[k][1]
                    if i_k != i_end:
                        pairs.add((i_k, i_end) if i_k < i_end else (i_end, i_k))
            for pair in pairs:
                pair_users[pair] += 1

        lists: dict[str, list[Neighbour]] = defaultdict(list)
        for (a, b), c in pair_users.items():
            score = c / math.sqrt(item_users[a] * item_users[b])
            lists[a].append(Neighbour(b, score, c))
            lists[b].append(Neighbour(a, score, c))
        neighbours = {
            item: tuple(sorted(ns, key=lambda n: (-n.score, -n.count, n.item_id))[:max_neighbours])
            for item, ns in lists.items()
        }
        return cls(neighbours, version)
