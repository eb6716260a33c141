"""Per-tenant assembly: config + loaded data + loaded models → :class:`TenantStages`.

The same function builds a tenant's stages for tests, benchmarks, offline evaluation and every
Serve ingress replica. What differs is only *where* a stage runs: a :class:`RemoteStages`
(from ``deployments/``) may hand back a handle-backed stage for a source kind, the ranker or
user state; everything it does not claim is built here from the component registries.
A :class:`serving.faults.FaultSwitch`, when given, wraps every source, the ranker and the
rules (tests and game days).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.catalogue import Catalogue
from core.config import PlatformConfig, PolicyConfig, SourceSpec
from core.contracts import CandidateSource, RankerStage
from core.experiments import DEFAULT_ARM, NO_EXPERIMENT, effective_surface
from core.features import observe_popularity, popularity_from_events
from ranking.fallback import FallbackScorer
from ranking.rules import AvailabilityRule, CatalogueRule, HiddenByUserRule, RuleChain
from ranking.scorer import RankerModel, RankerScorer
from ranking.slate import SlatePolicy
from retrieval.artifacts import TwoTowerArtifacts
from retrieval.cooccurrence import ItemToItemIndex
from retrieval.sources import SourceContext, TrendingSource, build_source
from serving.faults import FaultableRanker, FaultableRules, FaultableSource, FaultSwitch
from serving.pipeline import RecommendationPipeline
from serving.stages import SourceStage, SurfacePlan, TenantStages
from serving.user_state import OnlineUserStateStore

_TENANT_POLICY: Any = object()


@dataclass(frozen=True)
class TenantData:
    """A tenant's tables: catalogue, event log (bootstraps online state), users."""

    catalogue: Catalogue | None
    events: pa.Table | None = None
    users: pa.Table | None = None


@dataclass(frozen=True)
class TenantModels:
    """Loaded models. ``rankers`` maps version → a ``MultiTaskRanker`` (wrapped here in a
    :class:`RankerScorer`) or any ranker stage; ``similarity`` maps a ranker version to the
    :class:`retrieval.similarity.TwoTowerSimilarity` of the two-tower it was trained with."""

    two_tower: TwoTowerArtifacts | None = None
    pinned_two_towers: Mapping[tuple[str, str], TwoTowerArtifacts] = field(default_factory=dict)
    """``(two_tower, ann_index)`` → a pair experiment arms pin (in process; an arm whose pair
    is not here finds its two-tower source unavailable)."""
    cooccurrence: ItemToItemIndex | None = None
    rankers: Mapping[str, Any] = field(default_factory=dict)
    default_ranker: str | None = None
    similarity: Mapping[str, Any] = field(default_factory=dict)
    embedding_of: Callable[[str], np.ndarray | None] | None = None
    fallback_list: Any = None
    """The production :class:`serving.fallback_list.FallbackList` (policy-unavailable path)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Given to every source as ``SourceContext.extra`` (e.g. ``registry``: the precomputed
    source reads its ``batch_recs`` from it)."""


class RemoteStages(Protocol):
    """Stages that run in other deployments (``deployments/stages.py``). Each method returns
    ``None`` for "build it here"."""

    def source(self, cfg: SourceSpec, surface: str,
               pin: tuple[str, str] | None = None) -> CandidateSource | None: ...  # fmt: skip
    """``pin``: the ``(two_tower, ann_index)`` pair an arm pins for a two-tower source."""

    def ranker(self, version: str | None) -> RankerStage | None: ...

    def user_state(self) -> Callable[[str], Any] | None: ...


def _tenant_rows(events: pa.Table | None, tenant_id: str) -> pa.Table | None:
    if events is None or "tenant_id" not in events.column_names:
        return events
    return events.filter(pc.equal(events["tenant_id"], tenant_id))


def build_tenant_stages(
    config: PlatformConfig,
    tenant_id: str,
    data: TenantData,
    models: TenantModels = TenantModels(),
    *,
    policy: PolicyConfig | None = _TENANT_POLICY,
    remote: RemoteStages | None = None,
    faults: FaultSwitch | None = None,
) -> TenantStages:
    """``policy`` defaults to the tenant config's; ``None`` means the policy bundle failed to
    load, and every request then takes the fail-closed path."""
    tenant = config.tenant(tenant_id)
    catalogue = data.catalogue
    if catalogue is not None and catalogue.tenant_id != tenant_id:
        raise ValueError(f"catalogue is tenant {catalogue.tenant_id!r}, stages are {tenant_id!r}")
    events = _tenant_rows(data.events, tenant_id)
    policy_cfg = tenant.policy if policy is _TENANT_POLICY else policy
    experiments = tuple(e for e in config.experiments if e.tenant == tenant_id)
    observers: list[Callable[[Mapping[str, Any]], Any]] = []

    user_state = remote.user_state() if remote is not None else None
    if user_state is None:
        store = (
            OnlineUserStateStore.bootstrap(catalogue, tenant_id, events, data.users)
            if catalogue is not None
            else None
        )
        user_state = store.get if store is not None else _no_user_state
        if store is not None:
            observers.append(store.observe)
    popularity = popularity_from_events(events)
    observers.append(lambda e: observe_popularity(popularity, e))

    cooccurrence = models.cooccurrence
    kinds = {s.kind for surf in tenant.surfaces.values() for s in surf.sources}
    kinds |= {s.kind for e in experiments for v in e.variants for s in (v.overrides.sources or [])}
    if cooccurrence is None and events is not None and "item_to_item" in kinds:
        cooccurrence = ItemToItemIndex.build(
            events, tenant_id=tenant_id, version=f"cooc:{events.num_rows}"
        )

    rankers: dict[str, Any] = {}
    for version, r in models.rankers.items():
        if isinstance(r, RankerModel) and not hasattr(r, "score"):
            if catalogue is None:
                continue  # no features without a catalogue: requests take the fallback order
            r = RankerScorer(r, catalogue, popularity, version=version,
                             similarity=models.similarity.get(version))  # fmt: skip
        rankers[version] = r
    default_ranker = models.default_ranker or next(iter(rankers), None)

    def ranker_for(version: str | None) -> RankerStage | None:
        stage = remote.ranker(version) if remote is not None else None
        stage = stage or (rankers.get(version) if version else None)
        return FaultableRanker(stage, faults) if stage is not None and faults else stage

    built: dict[tuple[str, str, tuple[str, str] | None], CandidateSource] = {}

    def source_for(surface: str, cfg: SourceSpec, pin: tuple[str, str] | None = None) -> CandidateSource:
        pin = pin if cfg.kind == "two_tower" else None  # a pair pins two-tower sources only
        key = (surface, cfg.model_dump_json(), pin)
        if key not in built:
            source = (remote.source(cfg, surface, pin) if pin else remote.source(cfg, surface)) \
                if remote is not None else None  # fmt: skip
            if source is None:
                two_tower = models.two_tower if pin is None else models.pinned_two_towers.get(pin)
                ctx = SourceContext(tenant_id, surface, catalogue, events, cooccurrence,
                                    two_tower, dict(models.extra))  # fmt: skip
                source = build_source(cfg, ctx)
                if hasattr(source, "observe"):
                    observers.append(source.observe)
            built[key] = FaultableSource(source, faults) if faults else source
        return built[key]

    populars: dict[str, CandidateSource] = {}
    for surface, surf in tenant.surfaces.items():
        trending = [s for s in surf.sources if s.kind == "trending"]
        if trending:
            populars[surface] = source_for(surface, trending[0])
        else:
            populars[surface] = TrendingSource("popular", tenant_id, surface, 24.0)
            if events is not None:
                populars[surface].bootstrap(events)
            observers.append(populars[surface].observe)

    arms = [(s, NO_EXPERIMENT, DEFAULT_ARM, None) for s in tenant.surfaces]
    arms += [
        (s, e.id, v.name, v.overrides) for e in experiments for s in e.surfaces for v in e.variants
    ]
    plans: dict[tuple[str, str, str], SurfacePlan] = {}
    for surface, exp_id, arm, overrides in arms:
        eff = effective_surface(tenant.surfaces[surface], overrides)
        wanted = (overrides.ranker_version if overrides else None) or default_ranker
        pin = overrides.two_tower_pin if overrides else None
        slate = SlatePolicy.from_config(eff.slate, catalogue, models.embedding_of)
        plans[(surface, exp_id, arm)] = SurfacePlan(
            surface=surface,
            config=eff,
            sources=tuple(SourceStage(cfg, source_for(surface, cfg, pin)) for cfg in eff.sources),
            ranker=ranker_for(wanted),
            slate=slate,
            popular=populars[surface],
            ranker_version=wanted,
            pinned=tuple(slate.candidates()),
        )

    rules = RuleChain.from_policy(policy_cfg, catalogue) if policy_cfg is not None else None
    if rules is not None and faults is not None:
        rules = FaultableRules(rules, faults)
    return TenantStages(
        tenant=tenant,
        experiments=experiments,
        plans=plans,
        user_state=user_state,
        rules=rules,
        safe_rules=(CatalogueRule(catalogue), AvailabilityRule(catalogue), HiddenByUserRule()),
        fallback_scorer=FallbackScorer(popularity),
        versions={"config": config.version, "config_fingerprint": config.fingerprint()},
        popularity=popularity,
        observers=tuple(observers),
        fallback_list=models.fallback_list,
    )


def _no_user_state(user_id: str) -> Any:
    raise RuntimeError("user state store not loaded (no catalogue)")


def build_local_pipeline(
    config: PlatformConfig,
    tenant_id: str,
    *,
    catalogue: Catalogue | None,
    events_table: pa.Table | None,
    users_table: pa.Table | None = None,
    two_tower: Any = None,
    index: Any = None,
    ranker: Any = None,
    versions: Mapping[str, str] | None = None,
    ranker_similarity: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> RecommendationPipeline:
    """In-process pipeline for one tenant (unit tests, offline evaluation, benchmarks).

    ``two_tower`` is loaded :class:`TwoTowerArtifacts`, or a query-tower model with its
    ``index``; their versions come from ``versions`` (keys ``two_tower``, ``ann_index``,
    ``ann_index.item_tower``, ``ranker``), else ``version`` / ``item_tower_version``
    attributes on the objects. A model and index whose versions do not match raise
    :class:`retrieval.artifacts.VersionMismatch`. ``kwargs`` go to :func:`build_tenant_stages`."""
    v = dict(versions or {})
    artifacts = two_tower if isinstance(two_tower, TwoTowerArtifacts) else None
    if artifacts is None and two_tower is not None and index is not None:
        artifacts = TwoTowerArtifacts(
            model=two_tower,
            index=index,
            model_version=v.get("two_tower") or getattr(two_tower, "version", None) or "unversioned",
            index_version=v.get("ann_index") or getattr(index, "version", None) or "unversioned",
            index_item_tower_version=v.get("ann_index.item_tower")
            or getattr(index, "item_tower_version", None)
            or "unknown",
        )
    rankers = {}
    if ranker is not None:
        rankers = {v.get("ranker") or getattr(ranker, "version", None) or "local": ranker}
    models = TenantModels(two_tower=artifacts, rankers=rankers,
                          similarity=dict(ranker_similarity or {}),
                          embedding_of=kwargs.pop("embedding_of", None),
                          fallback_list=kwargs.pop("fallback_list", None),
                          extra=kwargs.pop("source_extra", None) or {})  # fmt: skip
    data = TenantData(catalogue, events_table, users_table)
    return RecommendationPipeline(build_tenant_stages(config, tenant_id, data, models, **kwargs))
