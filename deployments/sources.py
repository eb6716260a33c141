"""Candidate-sources deployment: every non-model source (item-to-item, trending, editorial,
fresh) of every tenant and surface, built by :func:`retrieval.sources.build_source`.

They share one replica because each is a cheap in-memory lookup (a hop per source would cost
more than the lookup). Trending counts live events: ``observe`` is broadcast to every replica
by ``POST /v1/events``. The ingress reaches them through
:class:`deployments.stages.RemoteSource` when ``placement`` puts a kind here.
"""

from __future__ import annotations

import logging

from ray import serve

from core.config import SourceSpec
from core.contracts import Query
from core.provenance import SourceColumns
from deployments import metrics
from deployments.loaders import ServingContext, load_catalogue, load_events, settle_replica
from deployments.settings import WatchUserConfig
from serving import tracing

logger = logging.getLogger("ray.serve")


@serve.deployment(name="CandidateSources", ray_actor_options={"num_cpus": 0.2}, max_ongoing_requests=64)
class CandidateSourcesDeployment:
    def __init__(self, ctx: ServingContext):
        from retrieval.cooccurrence import ItemToItemIndex

        self.config = ctx.platform()
        self._contexts = {}
        self._sources: dict[tuple[str, str, str], object] = {}
        for tenant in self.config.tenants:
            catalogue = load_catalogue(ctx, tenant.id)
            events = load_events(ctx, tenant.id)
            cooc = None
            if events is not None and events.num_rows:
                cooc = ItemToItemIndex.build(events, tenant_id=tenant.id)
            self._contexts[tenant.id] = (catalogue, events, cooc)
            for surface, surface_cfg in tenant.surfaces.items():
                for cfg in surface_cfg.sources:
                    if cfg.kind != "two_tower":  # the TwoTowerRetriever's
                        self._source(tenant.id, surface, cfg)
        settle_replica()

    def _source(self, tenant: str, surface: str, cfg: SourceSpec):
        from retrieval.sources import SourceContext, build_source

        key = (tenant, surface, cfg.model_dump_json())
        source = self._sources.get(key)
        if source is None:
            catalogue, events, cooc = self._contexts[tenant]
            ctx = SourceContext(tenant, surface, catalogue, events=events, cooccurrence=cooc)
            source = self._sources[key] = build_source(cfg, ctx)
        return source

    async def retrieve_columns(self, tenant: str, surface: str, cfg: SourceSpec, query: Query,
                               user_state, limit: int) -> tuple:  # fmt: skip
        """The source's answer as columns, like ``TwoTowerRetriever.retrieve_columns``."""
        if query.tenant_id != tenant:
            raise PermissionError("query is for another tenant")
        with tracing.span(f"{cfg.kind}.retrieve") as sp:
            result = await self._source(tenant, surface, cfg).retrieve(query, user_state, limit)
            if sp is not None:
                sp.set_attributes({"recsys.candidates": len(result.candidates),
                                   **tracing.versions_attributes(result.versions)})  # fmt: skip
        cands = result.candidates
        if isinstance(cands, SourceColumns):  # the built-in sources: columns already
            ids, scores = cands.item_ids, cands.scores
        else:
            ids, scores = [c.item_id for c in cands], [c.score for c in cands]
        return ids, scores, dict(result.diagnostics), result.version, dict(result.versions), result.query_vector

    async def observe(self, tenant: str, events: list[dict]) -> int:
        """Fold accepted live events into every trending source of ``tenant``."""
        n = 0
        for (t, _, _), source in list(self._sources.items()):
            if t == tenant and hasattr(source, "observe"):
                n += sum(bool(source.observe(e)) for e in events)
        return n

    def reconfigure(self, user_config: dict) -> None:
        WatchUserConfig.model_validate(user_config or {})

    async def metrics_text(self) -> str:
        return metrics.registry_text()
