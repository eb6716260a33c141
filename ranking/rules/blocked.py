"""Items and categories the tenant's policy blocks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.candidates import CandidateBatch
from core.catalogue import Catalogue
from core.components import RULES
from core.config import PolicyConfig
from core.contracts import FilterResult, MergedCandidate, PolicyUnavailable, Query
from ranking.rules.base import partition, partition_mask, require_catalogue


@RULES.register("blocked")
class BlockedRule:
    name = "blocked"

    def __init__(self, policy: PolicyConfig | None, catalogue: Catalogue | None):
        self.policy = policy
        self.catalogue = catalogue

    @classmethod
    def from_policy(
        cls, policy: PolicyConfig | None, catalogue: Catalogue | None, cfg: Any = None
    ) -> BlockedRule:
        return cls(policy, catalogue)

    def apply(
        self, query: Query, candidates: Sequence[MergedCandidate], user_state: Any
    ) -> FilterResult:
        if self.policy is None:
            raise PolicyUnavailable(f"{self.name}: policy bundle not loaded")
        items = set(self.policy.blocked_items)
        categories = set(self.policy.blocked_categories)
        if not categories:
            return partition(self.name, candidates, lambda c: "blocked_item", only=items)
        # Without the catalogue an item's category is unknown, so a category block cannot be
        # honoured; that is a policy failure, not a pass.
        cat = require_catalogue(self.name, self.catalogue, query)
        batch = CandidateBatch.of(candidates)
        rows = batch.rows(cat)
        codes = [k for k, name in enumerate(cat.categories) if name in categories]
        in_blocked = (rows >= 0) & np.isin(cat.category[np.maximum(rows, 0)], codes)
        by_item = np.fromiter((i in items for i in batch.item_ids), bool, len(batch))
        return partition_mask(self.name, batch, ~(by_item | in_blocked), "blocked_category",
                              reason_of_mask=(by_item, "blocked_item"))  # fmt: skip
