"""Items that co-occur with the user's most recent positive interactions."""

from __future__ import annotations

from collections import defaultdict

from pydantic import Field

from core.components import SOURCES
from core.config import SourceSpec
from core.contracts import Query, SourceResult
from core.features import UserState
from retrieval.cooccurrence import ItemToItemIndex
from retrieval.sources.base import SourceContext, SourceUnavailable, make_result


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

    async def retrieve(self, query: Query, user_state: UserState, limit: int) -> SourceResult:
        if self.index is None:
            raise SourceUnavailable(f"{self.name}: co-occurrence index not loaded")
        seeds = self.seeds(query, user_state)
        scores: dict[str, float] = defaultdict(float)
        via: dict[str, list[str]] = defaultdict(list)
        for pos, seed in enumerate(seeds):
            for n in self.index.get(seed):
                if n.count >= self.min_cooccurrence:
                    scores[n.item_id] += n.score / (pos + 1)
                    via[n.item_id].append(seed)
        ranked = sorted(scores.items(), key=lambda x: (-x[1], x[0]))[:limit]
        return make_result(
            self.name,
            self.version,
            ranked,
            {"seeds": seeds},
            {item: {"seeds": via[item]} for item, _ in ranked},
            versions={"item_to_item": self.version},
        )
