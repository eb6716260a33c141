"""Pinned items at fixed slate positions."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from core.components import SLATE_STEPS
from core.config import SlateStepSpec, StrictModel
from core.contracts import Candidate, FilterResult, Placement
from ranking.slate.draft import SlateContext, SlateDraft

PINNED_SOURCE = "pinned"


class PinnedItemConfig(StrictModel):
    item_id: str
    position: int = Field(ge=0)


class PinnedConfig(SlateStepSpec):
    items: list[PinnedItemConfig] = Field(default_factory=list)


@SLATE_STEPS.register("pinned", PinnedConfig)
class PinnedStep:
    """Places configured items at their positions. A pinned item is only placed if it is among
    the candidates, i.e. it passed the rule chain like any other item (the pipeline adds pinned
    items as candidates of source ``pinned``, :meth:`candidates`); a removed pinned item leaves
    its position to the ranked items. Pinned items never compete for the other positions."""

    name = "pinned"

    def __init__(self, pinned: Sequence[PinnedItemConfig]):
        self.pinned = sorted(pinned, key=lambda p: p.position)
        self.item_ids = frozenset(p.item_id for p in self.pinned)

    @classmethod
    def from_config(cls, cfg: PinnedConfig, ctx: SlateContext) -> PinnedStep:
        return cls(cfg.items)

    def candidates(self) -> list[Candidate]:
        return [Candidate(p.item_id, PINNED_SOURCE, "config", 0.0, p.position) for p in self.pinned]

    def apply(self, draft: SlateDraft) -> FilterResult:
        if not self.pinned:
            return FilterResult(kept=draft.pool, removed=[])
        pool = draft.pool
        here = {item: i for i, item in enumerate(pool.item_ids) if item in self.item_ids}
        if not here:
            return FilterResult(kept=pool, removed=[])
        pins = [p for p in self.pinned if p.item_id in here and p.position < draft.k]
        placed = [
            Placement(c, ("pinned",), "fixed", p.position)
            for c, p in zip(pool.rows_at([here[p.item_id] for p in pins]), pins, strict=True)
        ]
        return FilterResult(kept=pool.without(self.item_ids), removed=[], placed=placed)
