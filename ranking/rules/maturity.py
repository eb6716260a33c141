"""Items no more mature than the user may see (their own limit, else the policy default)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.catalogue import Catalogue
from core.components import RULES
from core.config import PolicyConfig
from core.contracts import FilterResult, MergedCandidate, PolicyUnavailable, Query
from core.schema import MATURITY_LEVELS
from ranking.rules.base import catalogue_rows, partition_mask, require_catalogue


@RULES.register("maturity")
class MaturityRule:
    name = "maturity"

    def __init__(self, policy: PolicyConfig | None, catalogue: Catalogue | None):
        self.policy = policy
        self.catalogue = catalogue

    @classmethod
    def from_policy(
        cls, policy: PolicyConfig | None, catalogue: Catalogue | None, cfg: Any = None
    ) -> MaturityRule:
        return cls(policy, catalogue)

    def limit_for(self, user_state: Any) -> int:
        own = getattr(user_state, "max_maturity", None)
        level = own if own in MATURITY_LEVELS else self.policy.default_max_maturity
        return MATURITY_LEVELS.index(level)

    def apply(
        self, query: Query, candidates: Sequence[MergedCandidate], user_state: Any
    ) -> FilterResult:
        if self.policy is None:
            raise PolicyUnavailable(f"{self.name}: policy bundle not loaded")
        cat = require_catalogue(self.name, self.catalogue, query)
        limit = self.limit_for(user_state)
        rows = catalogue_rows(cat, candidates)
        known = rows >= 0  # unknown maturity never passes
        ok = known.copy()
        ok[known] = cat.maturity[rows[known]] <= limit
        return partition_mask(self.name, candidates, ok, "maturity", unknown=~known)
