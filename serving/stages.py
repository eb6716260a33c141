"""The one object the pipeline runs over: a tenant's stages, built once by the assembler.

:class:`TenantStages` holds everything a request of one tenant needs: the surface plans (one
per surface and experiment arm, each with its sources, ranker and slate), the user-state
reader, the eligibility rules, the fallbacks, and the config versions. In process every stage
is a library object; in Serve some are thin handle-backed stages (``deployments/stages.py``)
with the same shapes. Nothing here knows which.

Invariants: one tenant per object; its data holds only that tenant's rows; it changes only
through :meth:`TenantStages.observe` (live events) and is replaced whole on a new version.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from core.components import SOURCES
from core.config import ExperimentConfig, SourceSpec, SurfaceConfig, TenantConfig
from core.contracts import (
    Candidate,
    CandidateSource,
    EligibilityRule,
    ExperimentAssignment,
    RankerStage,
)
from core.experiments import DEFAULT_ARM, NO_EXPERIMENT


@dataclass(frozen=True)
class SourceStage:
    config: SourceSpec
    source: CandidateSource

    @cached_property  # read per request: look the kind up once
    def personalised(self) -> bool:
        return bool(SOURCES.get(self.config.kind).meta.get("personalised", False))

    @cached_property
    def inline(self) -> bool:
        """Whether the source says its ``retrieve`` never suspends (an ``inline = True`` class
        attribute: every built-in source, the Ingress's own two-tower): it answers from memory
        on the calling thread, so the pipeline runs it on the request's task, without a task or
        a timer of its own."""
        return getattr(self.source, "inline", False) is True


@dataclass(frozen=True)
class SurfacePlan:
    """Everything one (surface, experiment arm) needs: its effective config and its stages.
    ``ranker`` is ``None`` when the arm asks for a ranker version that is not loaded."""

    surface: str
    config: SurfaceConfig
    sources: tuple[SourceStage, ...]
    ranker: RankerStage | None
    slate: Any
    """A :class:`ranking.slate.SlatePolicy` (``(query, scored, state) -> outcome``)."""
    popular: CandidateSource
    """The sources-failed fallback: tenant-and-surface popularity, answered from memory."""
    ranker_version: str | None = None
    pinned: tuple[Candidate, ...] = ()
    """Candidates the slate brings itself (pins), merged before the rules."""


@dataclass
class TenantStages:
    tenant: TenantConfig
    experiments: Sequence[ExperimentConfig]
    plans: dict[tuple[str, str, str], SurfacePlan]
    user_state: Callable[[str], Any]
    """``user_id`` → state (or an awaitable of it); raises when state cannot be read."""
    rules: EligibilityRule | None
    """The tenant's rule chain; ``None`` when the policy bundle could not be loaded."""
    safe_rules: tuple[EligibilityRule, ...]
    fallback_scorer: Any
    """Scores candidates when the ranker is unavailable (:class:`ranking.fallback.FallbackScorer`)."""
    versions: Mapping[str, str]
    """Static versions (config); each stage's result adds the artifacts it used."""
    popularity: Any = None
    """The tenant's live :class:`core.features.PopularityCounter` (ranker feature, fallback)."""
    observers: tuple[Callable[[Mapping[str, Any]], Any], ...] = field(default_factory=tuple)
    """Called with each accepted live event (user state, popularity, trending)."""
    fallback_list: Any = None
    """The tenant's production :class:`serving.fallback_list.FallbackList` (None: none
    published; the config's ``policy.safe_fallback`` is then the last resort)."""
    degraded: tuple[str, ...] = ()
    """Standing degradations every record of this tenant carries (``kill_switch:source:x``)."""

    def safe_fallback_list(self, surface: str, state: Any, now: Any, degraded: list[str]) -> tuple[list[str], str]:
        """The items served when policy data cannot be read, and their version: the production
        fallback list for the surface and the user's segment, else the config's list. An
        expired list is still served (it passed validation; the rules it can still read run
        again) and marked ``fallback_list_expired``; the expiry alert has fired by then."""
        lists = self.fallback_list
        if lists is not None:
            items = lists.items_for(surface, getattr(state, "max_maturity", None))
            if items:
                if lists.expired(now):
                    degraded.append("fallback_list_expired")
                return items, lists.version
        return list(self.tenant.policy.safe_fallback), "config"

    def plan(self, surface: str, assignment: ExperimentAssignment) -> SurfacePlan:
        key = (surface, assignment.experiment_id, assignment.arm)
        # An arm unknown here (config changed under a cached assignment) serves the surface's
        # default rather than failing the request.
        return self.plans.get(key) or self.plans[(surface, NO_EXPERIMENT, DEFAULT_ARM)]

    def observe(self, event: Mapping[str, Any]) -> None:
        """Fold one accepted live event into every holder of online state."""
        if event.get("tenant_id", self.tenant.id) != self.tenant.id:
            return
        for observe in self.observers:
            observe(event)
