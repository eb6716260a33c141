"""Items that co-occur with the user's most recent positive interactions."""

from __future__ import annotations

from pydantic import Field

from core.components import SOURCES
from core.config import SourceSpec
from core.contracts import Query, SourceResult
from core.features import UserState
from retrieval.cooccurrence import ItemToItemIndex
from retrieval.sources.base import SourceContext, SourceUnavailable, result_from_columns

_SEED_CACHE = 4096
"""Seeds whose neighbour columns a source keeps (≈ 50 neighbours each)."""


class ItemToItemSourceConfig(SourceSpec):
    seed_items: int = Field(5, ge=1, le=50, description="most recent history items used as seeds")
    min_cooccurrence: int = Field(2, ge=1)


@SOURCES.register("item_to_item", ItemToItemSourceConfig, personalised=True)
class ItemToItemSource:
    """Score of a candidate = sum over seeds of ``recency_weight(seed) * cosine(seed, item)``;
    the most recent seed weighs 1, the next 1/2, and so on, so the page follows what the user
    did last. Seeds come from ``query.context["item_id"]`` (item page) first, then history."""

    kind = "item_to_item"

    def __init__(
        self, name: str, index: ItemToItemIndex | None, *, seed_items: int, min_cooccurrence: int
    ):
        self.name = name
        self.index = index
        self.seed_items = seed_items
        self.min_cooccurrence = min_cooccurrence
        self.version = index.version if index is not None else "unloaded"
        self._cache: dict[str, tuple[list[str], list[float]]] = {}

    @classmethod
    def from_config(cls, cfg: ItemToItemSourceConfig, ctx: SourceContext) -> ItemToItemSource:
        return cls(
            cfg.name,
            ctx.cooccurrence,
            seed_items=cfg.seed_items,
            min_cooccurrence=cfg.min_cooccurrence,
        )

    def seeds(self, query: Query, user_state: UserState) -> list[str]:
        seeds: list[str] = []
        context_item = query.context.get("item_id") if query.context else None
        if isinstance(context_item, str):
            seeds.append(context_item)
        for item in reversed(user_state.history):
            if len(seeds) >= self.seed_items:
                break
            if item not in seeds:
                seeds.append(item)
        return seeds

    def _neighbours(self, seed: str) -> tuple[list[str], list[float]]:
        """``seed``'s neighbours with at least ``min_cooccurrence`` co-occurrences, in the
        index's order, as columns (ids, scores); the index is immutable, so the columns of
        recently used seeds are kept (at most ``_SEED_CACHE``)."""
        got = self._cache.get(seed)
        if got is None:
            found = [n for n in self.index.get(seed) if n.count >= self.min_cooccurrence]  # type: ignore[union-attr]
            got = ([n.item_id for n in found], [n.score for n in found])
            if len(self._cache) >= _SEED_CACHE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[seed] = got
        return got

    async def retrieve(self, query: Query, user_state: UserState, limit: int) -> SourceResult:
        if self.index is None:
            raise SourceUnavailable(f"{self.name}: co-occurrence index not loaded")
        seeds = self.seeds(query, user_state)
        scores: dict[str, float] = {}
        via: dict[str, list[str]] = {}
        for pos, seed in enumerate(seeds):
            n_ids, n_scores = self._neighbours(seed)
            w = pos + 1
            for item, sc in zip(n_ids, n_scores, strict=True):
                scores[item] = scores.get(item, 0.0) + sc / w
                found = via.get(item)
                if found is None:
                    via[item] = [seed]
                else:
                    found.append(seed)
        ranked = sorted(scores.items(), key=lambda x: (-x[1], x[0]))[:limit]
        return result_from_columns(self.name, self.version, [r[0] for r in ranked],
                                   [r[1] for r in ranked], {"seeds": seeds},
                                   versions={"item_to_item": self.version},
                                   per_item=[{"seeds": via[r[0]]} for r in ranked])  # fmt: skip
