"""Stage shapes of the request pipeline: what each stage object must offer.

Library objects satisfy these in process; a Serve replica passes adapters over deployment
handles that satisfy the same shapes. Kept apart from :mod:`serving.pipeline` so deployments and
stage implementations can import the shapes without the orchestration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from core.config import ExperimentConfig, SourceConfig, SurfaceConfig, TenantConfig
from core.contracts import (
    CandidateSource,
    EligibilityRule,
    ExperimentAssignment,
    MergedCandidate,
    Query,
    ScoredCandidate,
)

PINNED_SOURCE = "pinned"
SAFE_FALLBACK_SOURCE = "safe_fallback"
PERSONALISED_KINDS = frozenset({"two_tower", "item_to_item"})


class ServiceUnavailable(RuntimeError):
    """No safe answer exists for this request (HTTP 503). ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class UnknownSurface(KeyError):
    """The tenant has no such surface (HTTP 404)."""


# ------------------------------------------------------------------------------ stage shapes


class RankerStage(Protocol):
    """Scores candidates; one :class:`ScoredCandidate` per input, in input order."""

    version: str

    async def score(
        self,
        query: Query,
        user_state: Any,
        candidates: Sequence[MergedCandidate],
        task_weights: Mapping[str, float],
    ) -> list[ScoredCandidate]: ...


class FallbackStage(Protocol):
    version: str

    def score(
        self, query: Query, candidates: Sequence[MergedCandidate]
    ) -> list[ScoredCandidate]: ...


class SlateStage(Protocol):
    """Returns an object with ``items: list[SlateItem]`` and ``removed: list[Removal]``."""

    def __call__(self, query: Query, scored: Sequence[ScoredCandidate], user_state: Any) -> Any: ...


@dataclass(frozen=True)
class SourceStage:
    config: SourceConfig
    source: CandidateSource

    @property
    def personalised(self) -> bool:
        return self.config.kind in PERSONALISED_KINDS


@dataclass(frozen=True)
class SurfacePlan:
    """Everything one (surface, experiment arm) needs: its effective config and its stages.
    ``ranker`` is ``None`` when the arm asks for a ranker version that is not loaded."""

    surface: str
    config: SurfaceConfig
    sources: tuple[SourceStage, ...]
    ranker: RankerStage | None
    slate: SlateStage
    popular: CandidateSource
    """The sources-failed fallback: tenant-and-surface popularity, answered from memory."""
    ranker_version: str | None = None


class PipelineRuntime(Protocol):
    """What the pipeline needs from a tenant (see :class:`serving.assembly.TenantRuntime`)."""

    tenant: TenantConfig
    experiments: Sequence[ExperimentConfig]
    versions: Mapping[str, str]
    fallback_scorer: FallbackStage
    safe_rules: Sequence[EligibilityRule]

    def plan(self, surface: str, assignment: ExperimentAssignment) -> SurfacePlan: ...

    def user_state(self, user_id: str) -> Any: ...

    @property
    def rules(self) -> EligibilityRule | None: ...
