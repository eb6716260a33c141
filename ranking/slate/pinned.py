"""Pinned items at fixed slate positions."""

from __future__ import annotations

from collections.abc import Sequence

from core.config import PinnedItemConfig


class PinnedPositions:
    """Places configured items at their positions. A pinned item is only placed if it is among
    the eligible candidates, i.e. it passed the rule chain like any other item (the pipeline
    adds pinned items as candidates of source ``pinned``); a removed pinned item leaves its
    position to the ranked items."""

    def __init__(self, pinned: Sequence[PinnedItemConfig]):
        self.pinned = sorted(pinned, key=lambda p: p.position)
        self.item_ids = frozenset(p.item_id for p in self.pinned)

    def place(self, slate: list, eligible: dict, k: int) -> list:
        """Insert ``eligible[item_id]`` entries into ``slate`` (in ascending position order, so
        earlier pins do not shift later ones); positions past the end append."""
        out = list(slate)
        for p in self.pinned:
            if p.item_id in eligible and p.position < k:
                out.insert(min(p.position, len(out)), eligible[p.item_id])
        return out
