"""Only items in the requesting tenant's catalogue; this is what keeps tenants apart."""

from __future__ import annotations

from typing import Any

from core.candidates import CandidateBatch
from core.catalogue import Catalogue
from core.components import RULES
from core.config import PolicyConfig
from core.contracts import Query
from ranking.rules.base import Drops, JudgingRule, drops_mask, require_catalogue


@RULES.register("catalogue")
class CatalogueRule(JudgingRule):
    name = "catalogue"

    def __init__(self, catalogue: Catalogue | None):
        self.catalogue = catalogue

    @classmethod
    def from_policy(
        cls, policy: PolicyConfig | None, catalogue: Catalogue | None, cfg: Any = None
    ) -> CatalogueRule:
        return cls(catalogue)

    def judge(self, query: Query, batch: CandidateBatch, user_state: Any) -> Drops:
        cat = require_catalogue(self.name, self.catalogue, query)
        return drops_mask(batch.rows(cat) >= 0, "not_in_catalogue")
