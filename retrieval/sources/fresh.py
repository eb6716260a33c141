"""The newest available items in the catalogue."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from core.catalogue import Catalogue
from core.components import SOURCES
from core.config import SourceSpec
from core.contracts import Query, SourceResult
from retrieval.sources.base import SourceContext, SourceUnavailable, result_from_columns


class FreshSourceConfig(SourceSpec):
    max_age_hours: float = Field(72.0, gt=0)


@SOURCES.register("fresh", FreshSourceConfig, personalised=False)
class FreshSource:
    """Items created within ``max_age_hours`` before ``query.now`` and available then, newest
    first; score = ``1 - age / max_age`` in ``(0, 1]``."""

    kind = "fresh"
    inline = True  # answers from memory, never suspends (serving.stages.SourceStage.inline)

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
        # Availability is checked in growing chunks from the newest end until `limit` items
        # pass: a catalogue with many new items (a bulk import) does not cost a pass over all.
        found: list[np.ndarray] = []
        n_found, start, step = 0, lo, max(2 * limit, 64)
        while start < hi and n_found < limit:
            chunk = self._order[start : min(hi, start + step)]
            ok = chunk[self.catalogue.available(chunk, now)]
            found.append(ok)
            n_found += len(ok)
            start, step = start + len(chunk), 4 * step
        window = np.concatenate(found)[:limit] if found else self._order[:0]
        ages = now - self.catalogue.created_at[window]
        return result_from_columns(self.name, self.version,
                                   self.catalogue.item_ids[window].tolist(),
                                   (1.0 - ages / self.max_age_s).tolist(),
                                   rows=window.astype(np.int64, copy=False), catalogue=self.catalogue)  # fmt: skip
