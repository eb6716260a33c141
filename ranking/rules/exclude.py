"""Items the request excludes and items the user already positively interacted with."""

from __future__ import annotations

from typing import Any

from core.candidates import CandidateBatch
from core.catalogue import Catalogue
from core.components import RULES
from core.config import PolicyConfig
from core.contracts import Query
from ranking.rules.base import Drops, JudgingRule, drops_by_id, rows_in


@RULES.register("exclude")
class ExcludeRule(JudgingRule):
    name = "exclude"

    def __init__(self, catalogue: Catalogue | None = None):
        # Where the candidates' rows are read to find the items asked about (not a
        # ``catalogue`` attribute: the rule judges by id, with or without one).
        self._catalogue = catalogue

    @classmethod
    def from_policy(
        cls, policy: PolicyConfig | None, catalogue: Catalogue | None, cfg: Any = None
    ) -> ExcludeRule:
        return cls(catalogue)

    def judge(self, query: Query, batch: CandidateBatch, user_state: Any) -> Drops:
        seen = set(getattr(user_state, "history", ()) or ())
        seen |= getattr(user_state, "positives", set()) or set()
        excluded = query.exclude_item_ids

        def reason(item_id: str) -> str | None:
            if item_id in excluded:
                return "excluded_by_request"
            if item_id in seen:
                return "already_interacted"
            return None

        return drops_by_id(batch, reason, only=seen | set(excluded), catalogue=rows_in(self._catalogue, query))
