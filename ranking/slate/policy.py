"""The slate stage: scored candidates → the final ordered slate, each item with its reasons."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from core.catalogue import Catalogue
from core.config import SlateConfig
from core.contracts import Query, Removal, ScoredCandidate, SlateItem
from core.features import UserState
from ranking.slate.exploration import ExplorationSlots
from ranking.slate.frequency_cap import FrequencyCapRule
from ranking.slate.mmr import MmrSlatePolicy
from ranking.slate.pinned import PinnedPositions


@dataclass(frozen=True)
class SlateOutcome:
    items: list[SlateItem]
    removed: list[Removal]


class SlatePolicy:
    """Frequency cap → MMR ordering under category/source limits → exploration slots at the
    end → pinned items at their positions.

    Invariants: at most ``query.k`` items, no repeats; every item carries reasons; an
    exploration item carries its propensity; only the given candidates can appear."""

    def __init__(
        self,
        *,
        ordering: MmrSlatePolicy,
        frequency_cap: FrequencyCapRule | None,
        exploration: ExplorationSlots | None,
        pinned: PinnedPositions,
    ):
        self.ordering = ordering
        self.frequency_cap = frequency_cap
        self.exploration = exploration
        self.pinned = pinned

    @classmethod
    def from_config(
        cls,
        cfg: SlateConfig,
        catalogue: Catalogue | None,
        embedding_of: Callable[[str], np.ndarray | None] | None = None,
    ) -> SlatePolicy:
        def category_of(item_id: str) -> str | None:
            return catalogue.category_of(item_id) if catalogue is not None else None

        lam = cfg.mmr_lambda if cfg.diversity == "mmr" else 1.0
        return cls(
            ordering=MmrSlatePolicy(
                lam,
                category_of=category_of,
                max_per_category=cfg.max_per_category,
                source_quotas=cfg.source_quotas,
                embedding_of=embedding_of if cfg.diversity == "mmr" else None,
            ),
            frequency_cap=FrequencyCapRule.from_config(cfg.frequency_cap),
            exploration=ExplorationSlots.from_config(cfg.exploration)
            if cfg.exploration.slots
            else None,
            pinned=PinnedPositions(cfg.pinned),
        )

    def __call__(
        self, query: Query, scored: Sequence[ScoredCandidate], user_state: UserState
    ) -> SlateOutcome:
        k = query.k
        removed: list[Removal] = []
        if self.frequency_cap is not None:
            # Pinned positions are an editorial decision; the cap governs ranked items.
            scored, removed = self.frequency_cap.apply(
                query, scored, user_state, self.pinned.item_ids
            )
        eligible = {c.item_id: c for c in scored}
        pinned_here = [p for p in self.pinned.pinned if p.item_id in eligible and p.position < k]
        organic = [c for c in scored if c.item_id not in self.pinned.item_ids]
        ranked = sorted(organic, key=lambda c: -c.utility)

        n_free = max(0, k - len(pinned_here))
        explore: list[tuple[ScoredCandidate, float]] = []
        if self.exploration is not None and n_free > 1:
            n_explore = min(self.exploration.slots, n_free - 1)
            # Pool is ranks k.. of the utility order: what this slate would not show anyway.
            pool = self.exploration.pool_for(ranked, k, set())
            explore = self.exploration.sample(query.request_id, pool, n_explore)
        taken = {c.item_id for c, _ in explore}
        picks = self.ordering.select(
            [c for c in organic if c.item_id not in taken], n_free - len(explore)
        )

        entries: list[tuple[ScoredCandidate, tuple[str, ...], float | None]] = [
            (c, reasons, None) for c, reasons in picks
        ]
        entries += [(c, ("exploration", f"propensity:{p:.6g}"), p) for c, p in explore]
        pinned_entries = {p.item_id: (eligible[p.item_id], ("pinned",), None) for p in pinned_here}
        entries = self.pinned.place(entries, pinned_entries, k)[:k]

        items = [
            SlateItem(
                item_id=c.item_id,
                rank=r,
                score=float(c.utility),
                sources=tuple(dict.fromkeys(p.source for p in c.provenance)),
                reasons=reasons,
                propensity=prop,
            )
            for r, (c, reasons, prop) in enumerate(entries)
        ]
        return SlateOutcome(items=items, removed=list(removed))
