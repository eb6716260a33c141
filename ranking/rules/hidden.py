"""Items the user hid."""

from __future__ import annotations

from typing import Any

from core.candidates import CandidateBatch
from core.catalogue import Catalogue
from core.components import RULES
from core.config import PolicyConfig
from core.contracts import PolicyUnavailable, Query
from core.features import UserState
from ranking.rules.base import Drops, JudgingRule, drops_by_id, rows_in


@RULES.register("hidden")
class HiddenByUserRule(JudgingRule):
    name = "hidden"

    def __init__(self, catalogue: Catalogue | None = None):
        # Where the candidates' rows are read to find the items asked about (not a
        # ``catalogue`` attribute: the rule judges by id, with or without one).
        self._catalogue = catalogue

    @classmethod
    def from_policy(
        cls, policy: PolicyConfig | None, catalogue: Catalogue | None, cfg: Any = None
    ) -> HiddenByUserRule:
        return cls(catalogue)

    def judge(self, query: Query, batch: CandidateBatch, user_state: UserState | None) -> Drops:
        if user_state is None:
            raise PolicyUnavailable(f"{self.name}: no user state to read hidden items from")
        hidden = user_state.hidden
        return drops_by_id(batch, lambda _: "hidden_by_user", only=hidden, catalogue=rows_in(self._catalogue, query))
