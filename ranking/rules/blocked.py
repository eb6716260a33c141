"""Items and categories the tenant's policy blocks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.catalogue import Catalogue
from core.components import RULES
from core.config import PolicyConfig
from core.contracts import FilterResult, MergedCandidate, PolicyUnavailable, Query
from ranking.rules.base import partition, require_catalogue


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
        # Without the catalogue an item's category is unknown, so a category block cannot be
        # honoured; that is a policy failure, not a pass.
        cat = require_catalogue(self.name, self.catalogue, query) if categories else None

        def reason(c: MergedCandidate) -> str | None:
            if c.item_id in items:
                return "blocked_item"
            if cat is not None and cat.category_of(c.item_id) in categories:
                return "blocked_category"
            return None

        return partition(self.name, candidates, reason, only=None if categories else items)
