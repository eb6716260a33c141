"""Drops items already shown to this user too often recently."""

from __future__ import annotations

from collections.abc import Sequence

from core.config import FrequencyCapConfig
from core.contracts import Query, Removal, ScoredCandidate
from core.features import UserState


class FrequencyCapRule:
    """Removes an item when its impressions to the user in the last ``window_hours`` (from
    ``UserState.impressions``) reach ``max_impressions``. Reason code ``frequency_cap``."""

    name = "frequency_cap"

    def __init__(self, max_impressions: int, window_hours: float):
        self.max_impressions = max_impressions
        self.window_hours = window_hours

    @classmethod
    def from_config(cls, cfg: FrequencyCapConfig) -> FrequencyCapRule:
        return cls(cfg.max_impressions, cfg.window_hours)

    def apply(
        self,
        query: Query,
        scored: Sequence[ScoredCandidate],
        user_state: UserState,
        exempt: frozenset[str] = frozenset(),
    ) -> tuple[list[ScoredCandidate], list[Removal]]:
        # ``now`` is inclusive here: an impression logged at the request's own timestamp has
        # already been seen by the user.
        now = query.now.timestamp() + 1e-6
        counts = user_state.recent_impression_counts(now, self.window_hours)
        kept, removed = [], []
        for c in scored:
            if c.item_id not in exempt and counts.get(c.item_id, 0) >= self.max_impressions:
                removed.append(Removal(c.item_id, self.name, "frequency_cap"))
            else:
                kept.append(c)
        return kept, removed
