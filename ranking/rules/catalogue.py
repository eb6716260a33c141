"""Only items in the requesting tenant's catalogue; this is what keeps tenants apart."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.catalogue import Catalogue
from core.components import RULES
from core.config import PolicyConfig
from core.contracts import FilterResult, MergedCandidate, Query
from ranking.rules.base import catalogue_rows, partition_mask, require_catalogue


@RULES.register("catalogue")
class CatalogueRule:
    name = "catalogue"

    def __init__(self, catalogue: Catalogue | None):
        self.catalogue = catalogue

    @classmethod
    def from_policy(
        cls, policy: PolicyConfig | None, catalogue: Catalogue | None, cfg: Any = None
    ) -> CatalogueRule:
        return cls(catalogue)

    def apply(
        self, query: Query, candidates: Sequence[MergedCandidate], user_state: Any
    ) -> FilterResult:
        cat = require_catalogue(self.name, self.catalogue, query)
        rows = catalogue_rows(cat, candidates)
        return partition_mask(self.name, candidates, rows >= 0, "not_in_catalogue")
