"""A tenant's serving runtime: every loaded object the pipeline's stages need, built once.

:func:`build_tenant_runtime` assembles library objects for one tenant: catalogue, online user
state, popularity, sources per surface, rule chain, ranker(s), fallback scorer and slate
policy per (surface, experiment arm), plus the versions they came from.
:func:`build_local_pipeline` wraps it in a :class:`RecommendationPipeline`. A Serve replica
builds the same runtime (passing deployment-handle adapters through ``source_factories`` /
``rankers`` for stages that run in other deployments) and, on a new version, builds a second
runtime and calls :meth:`RecommendationPipeline.swap`: in-flight requests finish on the old one.

Invariants: a runtime serves exactly one tenant; its catalogue, events and state hold only
that tenant's rows; it is never mutated except through :meth:`TenantRuntime.observe`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.catalogue import Catalogue
from core.config import PlatformConfig, PolicyConfig, TenantConfig
from core.contracts import CandidateSource, EligibilityRule, ExperimentAssignment
from core.experiments import DEFAULT_ARM, NO_EXPERIMENT, effective_surface
from core.features import POPULARITY_HALF_LIFE_HOURS, PopularityCounter
from core.schema import POSITIVE_EVENT_TYPES, to_utc
from ranking.fallback import FallbackScorer
from ranking.rules import AvailabilityRule, CatalogueRule, HiddenByUserRule, RuleChain
from ranking.scorer import RankerModel, RankerScorer
from ranking.slate import SlatePolicy
from retrieval.cooccurrence import ItemToItemIndex
from retrieval.sources import SOURCE_KINDS, SourceContext, TrendingSource, TwoTowerArtifacts
from serving.pipeline import RankerStage, RecommendationPipeline, SourceStage, SurfacePlan
from serving.user_state import OnlineUserStateStore

SourceFactory = Callable[[Any, SourceContext], CandidateSource]
_TENANT_POLICY = object()


@dataclass
class TenantRuntime:
    tenant: TenantConfig
    experiments: tuple
    catalogue: Catalogue | None
    user_states: OnlineUserStateStore | None
    popularity: PopularityCounter
    rule_chain: RuleChain | None
    safe_rules: tuple[EligibilityRule, ...]
    fallback_scorer: FallbackScorer
    plans: dict[tuple[str, str, str], SurfacePlan]
    versions: dict[str, str]
    observers: tuple = field(default_factory=tuple)
    """Sources with ``observe(event)`` (trending), each once."""
    user_state_reader: Callable[[str], Any] | None = None
    """Replaces the local store for reads (e.g. a handle to a user-state deployment; may
    return an awaitable)."""

    @property
    def rules(self) -> RuleChain | None:
        return self.rule_chain

    def plan(self, surface: str, assignment: ExperimentAssignment) -> SurfacePlan:
        key = (surface, assignment.experiment_id, assignment.arm)
        # An arm unknown to this runtime (config changed under a cached assignment) serves
        # the surface's default rather than failing the request.
        return self.plans.get(key) or self.plans[(surface, NO_EXPERIMENT, DEFAULT_ARM)]

    def user_state(self, user_id: str):
        if self.user_state_reader is not None:
            return self.user_state_reader(user_id)
        if self.user_states is None:
            raise RuntimeError("user state store not loaded")
        return self.user_states.get(user_id)

    def observe(self, event: Mapping[str, Any]) -> None:
        """Fold one accepted live event into user state, popularity and trending."""
        if event.get("tenant_id", self.tenant.id) != self.tenant.id:
            return
        if self.user_states is not None:
            self.user_states.observe(event)
        if event["event_type"] in POSITIVE_EVENT_TYPES:
            ts = event["ts"]
            self.popularity.add(
                event["item_id"], ts if isinstance(ts, float | int) else to_utc(ts).timestamp()
            )
        for source in self.observers:
            source.observe(event)


def _tenant_events(events: pa.Table | None, tenant_id: str) -> pa.Table | None:
    if events is None or "tenant_id" not in events.column_names:
        return events
    return events.filter(pc.equal(events["tenant_id"], tenant_id))


def _popularity(events: pa.Table | None) -> PopularityCounter:
    counter = PopularityCounter(POPULARITY_HALF_LIFE_HOURS)
    if events is None or events.num_rows == 0:
        return counter
    rows = events.filter(
        pc.is_in(events["event_type"], pa.array(sorted(POSITIVE_EVENT_TYPES)))
    ).sort_by("ts")
    ts = pc.cast(pc.cast(rows["ts"], pa.timestamp("us", tz="UTC")), pa.int64()).to_pylist()
    for item, t in zip(rows["item_id"].to_pylist(), ts, strict=True):
        counter.add(item, t / 1e6)
    return counter


def build_tenant_runtime(
    platform_config: PlatformConfig,
    tenant_id: str,
    *,
    catalogue: Catalogue | None,
    events_table: pa.Table | None,
    users_table: pa.Table | None = None,
    two_tower: TwoTowerArtifacts | None = None,
    cooccurrence: ItemToItemIndex | None = None,
    rankers: Mapping[str, RankerModel | RankerStage] | None = None,
    default_ranker_version: str | None = None,
    policy: PolicyConfig | None | object = _TENANT_POLICY,
    source_factories: Mapping[str, SourceFactory] | None = None,
    embedding_of: Callable[[str], np.ndarray | None] | None = None,
    versions: Mapping[str, str] | None = None,
    user_state_reader: Callable[[str], Any] | None = None,
    ranker_similarity: Mapping[str, Any] | None = None,
) -> TenantRuntime:
    """``rankers`` maps version → a loaded ``MultiTaskRanker`` (wrapped in a
    :class:`RankerScorer` here) or any :class:`RankerStage` (e.g. a remote adapter).
    ``policy`` defaults to the tenant config's; ``None`` means the policy bundle failed to
    load, and every request then takes the fail-closed path. ``source_factories`` maps a
    source kind to a replacement constructor (a Serve handle adapter). ``ranker_similarity``
    maps a ranker version to the :class:`retrieval.similarity.TwoTowerSimilarity` of the
    two-tower it was trained with (its ``retrieval_score`` for every candidate)."""
    tenant = platform_config.tenant(tenant_id)
    if catalogue is not None and catalogue.tenant_id != tenant_id:
        raise ValueError(f"catalogue is tenant {catalogue.tenant_id!r}, runtime is {tenant_id!r}")
    events = _tenant_events(events_table, tenant_id)
    policy_cfg = tenant.policy if policy is _TENANT_POLICY else policy
    experiments = tuple(e for e in platform_config.experiments if e.tenant == tenant_id)

    user_states = (  # a reader (another deployment) holds the state instead: none to build
        OnlineUserStateStore.bootstrap(catalogue, tenant_id, events, users_table)
        if catalogue is not None and user_state_reader is None
        else None
    )
    popularity = _popularity(events)
    kinds = {s.kind for surf in tenant.surfaces.values() for s in surf.sources}
    kinds |= {s.kind for e in experiments for v in e.variants for s in (v.overrides.sources or [])}
    if cooccurrence is None and events is not None and "item_to_item" in kinds:
        cooccurrence = ItemToItemIndex.build(
            events, tenant_id=tenant_id, version=f"cooc:{events.num_rows}"
        )

    scorers: dict[str, RankerStage] = {}
    for version, r in (rankers or {}).items():
        if isinstance(r, RankerModel) and not hasattr(r, "score"):
            if catalogue is None:
                continue  # no features without a catalogue: requests take the fallback order
            scorers[version] = RankerScorer(
                r, catalogue, popularity, version=version,
                similarity=(ranker_similarity or {}).get(version),
            )  # fmt: skip
        else:
            scorers[version] = r
    default_ranker_version = default_ranker_version or next(iter(scorers), None)

    built: dict[tuple[str, str], CandidateSource] = {}
    observers: list = []

    def source_for(surface: str, cfg) -> CandidateSource:
        key = (surface, cfg.model_dump_json())
        if key not in built:
            ctx = SourceContext(tenant_id, surface, catalogue, events, cooccurrence, two_tower)
            factory = (source_factories or {}).get(cfg.kind)
            built[key] = (
                factory(cfg, ctx) if factory else SOURCE_KINDS[cfg.kind].from_config(cfg, ctx)
            )
            if hasattr(built[key], "observe"):
                observers.append(built[key])
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
            observers.append(populars[surface])

    arms = [(s, NO_EXPERIMENT, DEFAULT_ARM, None) for s in tenant.surfaces]
    arms += [
        (s, e.id, v.name, v.overrides) for e in experiments for s in e.surfaces for v in e.variants
    ]
    plans: dict[tuple[str, str, str], SurfacePlan] = {}
    for surface, exp_id, arm, overrides in arms:
        eff = effective_surface(tenant.surfaces[surface], overrides)
        wanted = (overrides.ranker_version if overrides else None) or default_ranker_version
        plans[(surface, exp_id, arm)] = SurfacePlan(
            surface=surface,
            config=eff,
            sources=tuple(SourceStage(cfg, source_for(surface, cfg)) for cfg in eff.sources),
            ranker=scorers.get(wanted) if wanted else None,
            slate=SlatePolicy.from_config(eff.slate, catalogue, embedding_of),
            popular=populars[surface],
            ranker_version=wanted,
        )

    rule_chain = RuleChain.from_policy(policy_cfg, catalogue) if policy_cfg is not None else None
    all_versions = {
        "config": platform_config.version,
        "config_fingerprint": platform_config.fingerprint(),
    }
    if two_tower is not None:
        all_versions["two_tower"] = two_tower.model_version
        all_versions["ann_index"] = two_tower.index_version
    if cooccurrence is not None:
        all_versions["item_to_item"] = cooccurrence.version
    all_versions.update(versions or {})
    return TenantRuntime(
        tenant=tenant,
        experiments=experiments,
        catalogue=catalogue,
        user_states=user_states,
        popularity=popularity,
        rule_chain=rule_chain,
        safe_rules=(CatalogueRule(catalogue), AvailabilityRule(catalogue), HiddenByUserRule()),
        fallback_scorer=FallbackScorer(popularity),
        plans=plans,
        versions=all_versions,
        observers=tuple(observers),
        user_state_reader=user_state_reader,
    )


def _registry_versions(registry: Any, tenant_id: str) -> dict[str, str]:
    """Production versions and the index's item-tower version from the registry's manifests."""
    out: dict[str, str] = {}
    for kind in ("two_tower", "ann_index", "ranker"):
        try:
            version = registry.resolve(kind, tenant_id, "production")
        except Exception:
            version = None
        if version is None:
            continue
        out[kind] = version
        if kind == "ann_index":
            m = registry.manifest(kind, tenant_id, version)
            tower = m.config.get("item_tower_version") or m.lineage.parents.get("two_tower")
            if tower:
                out["ann_index.item_tower"] = tower
    return out


def build_local_pipeline(
    platform_config: PlatformConfig,
    tenant_id: str,
    *,
    catalogue: Catalogue | None,
    events_table: pa.Table | None,
    two_tower: Any = None,
    index: Any = None,
    ranker: Any = None,
    registry: Any = None,
    users_table: pa.Table | None = None,
    versions: Mapping[str, str] | None = None,
    **runtime_kwargs: Any,
) -> RecommendationPipeline:
    """In-process pipeline for one tenant (unit tests, offline evaluation, benchmarks).

    ``two_tower`` is a loaded query-tower model (or ready :class:`TwoTowerArtifacts`) and
    ``index`` its ANN index; their versions come from ``versions`` (keys ``two_tower``,
    ``ann_index``, ``ann_index.item_tower``, ``ranker``), else the registry's production
    manifests, else ``version`` / ``item_tower_version`` attributes on the objects. A model
    and index whose versions do not match raise :class:`VersionMismatch`."""
    v = dict(_registry_versions(registry, tenant_id) if registry is not None else {})
    v.update(versions or {})
    artifacts = two_tower if isinstance(two_tower, TwoTowerArtifacts) else None
    if artifacts is None and two_tower is not None and index is not None:
        model_version = v.get("two_tower") or getattr(two_tower, "version", None) or "unversioned"
        artifacts = TwoTowerArtifacts(
            model=two_tower,
            index=index,
            model_version=model_version,
            index_version=v.get("ann_index") or getattr(index, "version", None) or "unversioned",
            index_item_tower_version=v.get("ann_index.item_tower")
            or getattr(index, "item_tower_version", None)
            or "unknown",
        )
    rankers = None
    if ranker is not None:
        rankers = {v.get("ranker") or getattr(ranker, "version", None) or "local": ranker}
    runtime = build_tenant_runtime(
        platform_config,
        tenant_id,
        catalogue=catalogue,
        events_table=events_table,
        users_table=users_table,
        two_tower=artifacts,
        rankers=rankers,
        versions={k: val for k, val in v.items() if k in ("two_tower", "ann_index", "ranker")},
        **runtime_kwargs,
    )
    return RecommendationPipeline(runtime)
