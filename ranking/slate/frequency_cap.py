"""Drops items already shown to this user too often recently."""

from __future__ import annotations

from pydantic import Field

from core.components import SLATE_STEPS
from core.config import SlateStepSpec
from core.contracts import FilterResult, Removal
from ranking.slate.draft import SlateContext, SlateDraft


class FrequencyCapConfig(SlateStepSpec):
    max_impressions: int = Field(3, ge=1)
    window_hours: float = Field(24.0, gt=0)


@SLATE_STEPS.register("frequency_cap", FrequencyCapConfig)
class FrequencyCapStep:
    """Removes an item when its impressions to the user in the last ``window_hours`` (from
    ``UserState.impressions``) reach ``max_impressions``. Reason code ``frequency_cap``.
    Placed items (pins, when this step runs after them) are an editorial decision: not capped."""

    name = "frequency_cap"

    def __init__(self, max_impressions: int, window_hours: float):
        self.max_impressions = max_impressions
        self.window_hours = window_hours

    @classmethod
    def from_config(cls, cfg: FrequencyCapConfig, ctx: SlateContext) -> FrequencyCapStep:
        return cls(cfg.max_impressions, cfg.window_hours)

    def apply(self, draft: SlateDraft) -> FilterResult:
        # ``now`` is inclusive here: an impression logged at the request's own timestamp has
        # already been seen by the user.
        now = draft.query.now.timestamp() + 1e-6
        counts = draft.user_state.recent_impression_counts(now, self.window_hours)
        pool = draft.pool
        if not counts:
            return FilterResult(kept=pool, removed=[])
        capped = {i for i, n in counts.items() if n >= self.max_impressions}
        removed = [Removal(i, self.name, "frequency_cap") for i in pool.item_ids if i in capped]
        return FilterResult(kept=pool.without(capped) if removed else pool, removed=removed)
