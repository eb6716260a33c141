"""Time-decayed popularity per tenant and surface."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from core.clock import column_micros, epoch_seconds
from core.components import SOURCES
from core.config import SourceSpec
from core.contracts import Query, SourceResult
from core.features import PopularityCounter
from core.schema import POSITIVE_EVENT_TYPES
from retrieval.sources.base import SourceContext, result_from_columns


class TrendingSourceConfig(SourceSpec):
    half_life_hours: float = Field(24.0, gt=0)


@SOURCES.register("trending", TrendingSourceConfig, personalised=False)
class TrendingSource:
    """Counts positive events of its tenant on its surface. An event without a surface (an
    import, a synthetic log) is not attributable, so it counts for every surface; an event on
    another surface does not count. Also the platform's "popular" fallback: it needs no model
    and answers from memory."""

    kind = "trending"
    inline = True  # answers from memory, never suspends (serving.stages.SourceStage.inline)

    def __init__(self, name: str, tenant_id: str, surface: str, half_life_hours: float):
        self.name = name
        self.tenant_id = tenant_id
        self.surface = surface
        self.half_life_hours = half_life_hours
        self.counter = PopularityCounter(half_life_hours)
        self.version = f"trending:{surface}:hl{half_life_hours:g}h"

    @classmethod
    def from_config(cls, cfg: TrendingSourceConfig, ctx: SourceContext) -> TrendingSource:
        source = cls(cfg.name, ctx.tenant_id, ctx.surface, cfg.half_life_hours)
        if ctx.events is not None:
            source.bootstrap(ctx.events)
        return source

    def _counts(self, tenant: Any, surface: Any, event_type: Any) -> bool:
        return (
            tenant in (None, self.tenant_id)
            and surface in (None, self.surface)
            and event_type in POSITIVE_EVENT_TYPES
        )

    def bootstrap(self, events: pa.Table) -> int:
        mask = pc.is_in(events["event_type"], pa.array(sorted(POSITIVE_EVENT_TYPES)))
        if "tenant_id" in events.column_names:
            mask = pc.and_(mask, pc.equal(events["tenant_id"], self.tenant_id))
        if "surface" in events.column_names:
            mask = pc.and_(
                mask,
                pc.or_kleene(
                    pc.is_null(events["surface"]), pc.equal(events["surface"], self.surface)
                ),
            )
        rows = events.filter(mask).sort_by("ts")
        ts = column_micros(rows["ts"]).to_pylist()
        for item, t in zip(rows["item_id"].to_pylist(), ts, strict=True):
            self.counter.add(item, t / 1e6)
        return rows.num_rows

    def observe(self, event: Mapping[str, Any]) -> bool:
        if not self._counts(event.get("tenant_id"), event.get("surface"), event.get("event_type")):
            return False
        self.counter.add(event["item_id"], epoch_seconds(event["ts"]))
        return True

    async def retrieve(self, query: Query, user_state: Any, limit: int) -> SourceResult:
        top = self.counter.top(query.now.timestamp(), limit)
        ids, scores = zip(*top, strict=True) if top else ((), ())  # two columns, unzipped in C
        return result_from_columns(self.name, self.version, ids, scores, {"items_counted": len(self.counter)})
