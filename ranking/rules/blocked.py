"""Items and categories the tenant's policy blocks."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.candidates import CandidateBatch
from core.catalogue import Catalogue
from core.components import RULES
from core.config import PolicyConfig
from core.contracts import PolicyUnavailable, Query
from ranking.rules.base import Drops, JudgingRule, drops_by_id, drops_mask, require_catalogue


@RULES.register("blocked")
class BlockedRule(JudgingRule):
    name = "blocked"

    def __init__(self, policy: PolicyConfig | None, catalogue: Catalogue | None):
        self.policy = policy
        self.catalogue = catalogue

    @classmethod
    def from_policy(
        cls, policy: PolicyConfig | None, catalogue: Catalogue | None, cfg: Any = None
    ) -> BlockedRule:
        return cls(policy, catalogue)

    def judge(self, query: Query, batch: CandidateBatch, user_state: Any) -> Drops:
        if self.policy is None:
            raise PolicyUnavailable(f"{self.name}: policy bundle not loaded")
        items = set(self.policy.blocked_items)
        categories = set(self.policy.blocked_categories)
        if not categories:
            return drops_by_id(batch, lambda _: "blocked_item", only=items)
        # Without the catalogue an item's category is unknown, so a category block cannot be
        # honoured; that is a policy failure, not a pass.
        cat = require_catalogue(self.name, self.catalogue, query)
        rows = batch.rows(cat)
        codes = [k for k, name in enumerate(cat.categories) if name in categories]
        in_blocked = (rows >= 0) & np.isin(cat.category[np.maximum(rows, 0)], codes)
        by_item = np.fromiter(map(items.__contains__, batch.item_ids), bool, len(batch))
        return drops_mask(~(by_item | in_blocked), "blocked_category",
                          reason_of_mask=(by_item, "blocked_item"))  # fmt: skip
