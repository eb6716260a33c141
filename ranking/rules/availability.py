"""Only items created and inside their availability window at request time."""

from __future__ import annotations

from typing import Any

from core.candidates import CandidateBatch
from core.catalogue import Catalogue
from core.components import RULES
from core.config import PolicyConfig
from core.contracts import Query
from ranking.rules.base import Drops, JudgingRule, drops_mask, require_catalogue


@RULES.register("availability")
class AvailabilityRule(JudgingRule):
    name = "availability"

    def __init__(self, catalogue: Catalogue | None):
        self.catalogue = catalogue

    @classmethod
    def from_policy(
        cls, policy: PolicyConfig | None, catalogue: Catalogue | None, cfg: Any = None
    ) -> AvailabilityRule:
        return cls(catalogue)

    def judge(self, query: Query, batch: CandidateBatch, user_state: Any) -> Drops:
        cat = require_catalogue(self.name, self.catalogue, query)
        rows = batch.rows(cat)
        known = rows >= 0
        if known.all():  # every candidate in the catalogue (the usual case): no masking
            return drops_mask(cat.available(rows, query.now.timestamp()), "unavailable")
        ok = known.copy()
        ok[known] = cat.available(rows[known], query.now.timestamp())
        return drops_mask(ok, "unavailable", unknown=~known)
