"""Only items created and inside their availability window at request time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.catalogue import Catalogue
from core.components import RULES
from core.config import PolicyConfig
from core.contracts import FilterResult, MergedCandidate, Query
from ranking.rules.base import catalogue_rows, partition_mask, require_catalogue


@RULES.register("availability")
class AvailabilityRule:
    name = "availability"

    def __init__(self, catalogue: Catalogue | None):
        self.catalogue = catalogue

    @classmethod
    def from_policy(
        cls, policy: PolicyConfig | None, catalogue: Catalogue | None, cfg: Any = None
    ) -> AvailabilityRule:
        return cls(catalogue)

    def apply(
        self, query: Query, candidates: Sequence[MergedCandidate], user_state: Any
    ) -> FilterResult:
        cat = require_catalogue(self.name, self.catalogue, query)
        rows = catalogue_rows(cat, candidates)
        known = rows >= 0
        ok = known.copy()
        ok[known] = cat.available(rows[known], query.now.timestamp())
        return partition_mask(self.name, candidates, ok, "unavailable", unknown=~known)
