"""Items the user hid."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.catalogue import Catalogue
from core.components import RULES
from core.config import PolicyConfig
from core.contracts import FilterResult, MergedCandidate, PolicyUnavailable, Query
from core.features import UserState
from ranking.rules.base import partition


@RULES.register("hidden")
class HiddenByUserRule:
    name = "hidden"

    @classmethod
    def from_policy(
        cls, policy: PolicyConfig | None, catalogue: Catalogue | None, cfg: Any = None
    ) -> HiddenByUserRule:
        return cls()

    def apply(
        self, query: Query, candidates: Sequence[MergedCandidate], user_state: UserState | None
    ) -> FilterResult:
        if user_state is None:
            raise PolicyUnavailable(f"{self.name}: no user state to read hidden items from")
        hidden = user_state.hidden
        return partition(
            self.name, candidates, lambda c: "hidden_by_user" if c.item_id in hidden else None,
            only=hidden,
        )
