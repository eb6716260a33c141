"""The newest available items in the catalogue."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from core.catalogue import Catalogue
from core.components import SOURCES
from core.config import SourceSpec
from core.contracts import Query, SourceResult
from retrieval.sources.base import SourceContext, SourceUnavailable, make_result


class FreshSourceConfig(SourceSpec):
    max_age_hours: float = Field(72.0, gt=0)


@SOURCES.register("fresh", FreshSourceConfig, personalised=False)
class FreshSource:
    """Items created within ``max_age_hours`` before ``query.now`` and available then, newest
    first; score = ``1 - age / max_age`` in ``(0, 1]``."""

    kind = "fresh"

    def __init__(self, name: str, catalogue: Catalogue | None, max_age_hours: float):
        self.name = name
        self.catalogue = catalogue
        self.max_age_s = max_age_hours * 3600.0
        self.version = (
            f"catalogue:{catalogue.tenant_id}:{len(catalogue)}" if catalogue else "unloaded"
        )
        # Newest first once, so a request scans only the head of the order.
        self._order = np.argsort(-catalogue.created_at, kind="stable") if catalogue else None
        # -created_at along that order, ascending: what each request binary-searches.
        self._neg_created = -catalogue.created_at[self._order] if catalogue else None

    @classmethod
    def from_config(cls, cfg: FreshSourceConfig, ctx: SourceContext) -> FreshSource:
        return cls(cfg.name, ctx.catalogue, cfg.max_age_hours)

    async def retrieve(self, query: Query, user_state: Any, limit: int) -> SourceResult:
        if self.catalogue is None:
            raise SourceUnavailable(f"{self.name}: catalogue not loaded")
        now = query.now.timestamp()
        # created_at is sorted descending along _order: future items first, then in-window.
        lo = int(np.searchsorted(self._neg_created, -now, side="left"))
        hi = int(np.searchsorted(self._neg_created, -(now - self.max_age_s), side="right"))
        window = self._order[lo:hi]
        window = window[self.catalogue.available(window, now)][:limit]
        ages = now - self.catalogue.created_at[window]
        scored = [
            (str(self.catalogue.item_ids[i]), float(1.0 - a / self.max_age_s))
            for i, a in zip(window, ages, strict=True)
        ]
        return make_result(self.name, self.version, scored)
