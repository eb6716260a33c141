"""Items no more mature than the user may see (their own limit, else the policy default)."""

from __future__ import annotations

from typing import Any

from core.candidates import CandidateBatch
from core.catalogue import Catalogue
from core.components import RULES
from core.config import PolicyConfig
from core.contracts import PolicyUnavailable, Query
from core.schema import MATURITY_LEVELS
from ranking.rules.base import Drops, JudgingRule, drops_mask, require_catalogue


@RULES.register("maturity")
class MaturityRule(JudgingRule):
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

    def judge(self, query: Query, batch: CandidateBatch, user_state: Any) -> Drops:
        if self.policy is None:
            raise PolicyUnavailable(f"{self.name}: policy bundle not loaded")
        cat = require_catalogue(self.name, self.catalogue, query)
        limit = self.limit_for(user_state)
        rows = batch.rows(cat)
        known = rows >= 0  # unknown maturity never passes
        if known.all():  # every candidate in the catalogue (the usual case): no masking
            return drops_mask(cat.maturity[rows] <= limit, "maturity")
        ok = known.copy()
        ok[known] = cat.maturity[rows[known]] <= limit
        return drops_mask(ok, "maturity", unknown=~known)
