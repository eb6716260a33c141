"""Test and game-day fault injection: one switch, applied by the assembler as stage wrappers.

:class:`FaultSwitch` holds the current :class:`FaultInjection` and can be flipped live
(``Ingress.set_faults``, a handle call, never HTTP); the wrappers read it on every call, so a
flip needs no rebuild. Off by default, and free when off (one attribute read per call).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.contracts import FilterResult, MergedCandidate, PolicyUnavailable, Query, RankerResult


class FaultInjection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source_delay_ms: dict[str, float] = Field(default_factory=dict)
    """Source name -> extra delay before it answers (to exercise its timeout)."""
    ranker_error: bool = False
    """The ranker stage raises on every call (to exercise the ranker fallback)."""
    policy_unavailable: bool = False
    """Serve as if the policy bundle could not be read (fail closed)."""


class FaultSwitch:
    def __init__(self, faults: FaultInjection | None = None):
        self.faults = faults or FaultInjection()

    def set(self, faults: FaultInjection | Mapping[str, Any]) -> None:
        self.faults = FaultInjection.model_validate(faults)


class RankerFault(RuntimeError):
    """Raised by a ranker stage while ``ranker_error`` is on."""


class FaultableSource:
    """A source behind ``source_delay_ms``; everything else is the wrapped source's."""

    def __init__(self, source: Any, switch: FaultSwitch):
        self._source, self._switch = source, switch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    async def retrieve(self, query: Query, user_state: Any, limit: int):
        delay = self._switch.faults.source_delay_ms.get(self._source.name)
        if delay:
            await asyncio.sleep(delay / 1000.0)
        return await self._source.retrieve(query, user_state, limit)


class FaultableRanker:
    def __init__(self, ranker: Any, switch: FaultSwitch):
        self._ranker, self._switch = ranker, switch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ranker, name)

    async def score(self, query: Query, user_state: Any, candidates: Sequence[MergedCandidate],
                    task_weights: Mapping[str, float], *,
                    query_vectors: Mapping[str, Any] | None = None) -> RankerResult:  # fmt: skip
        if self._switch.faults.ranker_error:
            raise RankerFault("fault injection: ranker_error")
        return await self._ranker.score(query, user_state, candidates, task_weights,
                                        query_vectors=query_vectors)  # fmt: skip


class FaultableRules:
    def __init__(self, rules: Any, switch: FaultSwitch):
        self._rules, self._switch = rules, switch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rules, name)

    def apply(self, query: Query, candidates: Sequence[MergedCandidate], user_state: Any
              ) -> FilterResult:  # fmt: skip
        if self._switch.faults.policy_unavailable:
            raise PolicyUnavailable("fault injection: policy_unavailable")
        return self._rules.apply(query, candidates, user_state)
