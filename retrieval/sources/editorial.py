"""A hand-curated list from config, in the editors' order."""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import Field

from core.components import SOURCES
from core.config import SourceSpec
from core.contracts import Query, SourceResult
from retrieval.sources.base import SourceContext, make_result


class EditorialSourceConfig(SourceSpec):
    items: list[str] = Field(default_factory=list)


@SOURCES.register("editorial", EditorialSourceConfig, personalised=False)
class EditorialSource:
    kind = "editorial"
    inline = True  # answers from memory, never suspends (serving.stages.SourceStage.inline)

    def __init__(self, name: str, items: list[str]):
        self.name = name
        self.items = list(dict.fromkeys(items))  # de-duplicated, order kept
        digest = hashlib.sha256("\n".join(self.items).encode()).hexdigest()[:12]
        self.version = f"editorial:{digest}"

    @classmethod
    def from_config(cls, cfg: EditorialSourceConfig, ctx: SourceContext) -> EditorialSource:
        return cls(cfg.name, cfg.items)

    async def retrieve(self, query: Query, user_state: Any, limit: int) -> SourceResult:
        n = len(self.items)
        # Score falls linearly with the editors' position so it is comparable across lists.
        scored = [(item, 1.0 - r / n) for r, item in enumerate(self.items[:limit])]
        return make_result(self.name, self.version, scored)
