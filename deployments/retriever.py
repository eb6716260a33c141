"""Two-tower retrieval deployment: the query tower and the ANN index of each tenant, loaded
lazily from the registry alias (``production``) and hot-swapped when the alias moves.

Thin wrapper over :class:`deployments.model_slots.TwoTowerSlots` (one
:class:`retrieval.sources.TwoTowerSource` per tenant and loaded pair; a pair whose index was
built by another item tower is refused and the old pair keeps serving), which also holds the
pairs experiment arms pin (``two_tower_version`` + ``ann_index_version``) beside production. Not deployed when
``placement.source_kinds.two_tower`` is ``ingress``: the Ingress replicas hold the slots then.
"""

from __future__ import annotations

import logging

from ray import serve

from core.contracts import Query
from deployments import metrics
from deployments.loaders import ServingContext, settle_replica
from deployments.model_slots import TwoTowerSlots
from deployments.settings import WatchUserConfig
from serving import tracing

logger = logging.getLogger("ray.serve")


@serve.deployment(name="TwoTowerRetriever", ray_actor_options={"num_cpus": 0.3}, max_ongoing_requests=32)
class TwoTowerRetrieverDeployment:
    async def __init__(self, ctx: ServingContext, device: str = "cpu"):
        self.settings = WatchUserConfig()
        self.two_tower = TwoTowerSlots(ctx, device)
        self.registry = self.two_tower.registry
        await self.two_tower.refresh_all()  # load before taking traffic; then poll
        settle_replica()
        self._ensure_polling()

    def _ensure_polling(self) -> None:
        self.two_tower.ensure_polling(lambda: self.settings.poll_interval_s)

    def reconfigure(self, user_config: dict) -> None:
        self.settings = WatchUserConfig.model_validate(user_config or {})

    async def retrieve_columns(self, tenant: str, surface: str, cfg, query: Query, user_state,
                               limit: int, pin: tuple[str, str] | None = None
                               ) -> tuple[list[str], list[float], dict, str, dict, tuple]:  # fmt: skip
        """The two-tower source's answer as columns (item ids, scores, diagnostics, source
        version, artifact versions, ``(two-tower version, query vector)`` for the ranker's
        feature): a few lists cross the hop instead of one object per
        candidate (:class:`deployments.stages.RemoteSource` rebuilds the result). ``pin``: an
        experiment arm's ``(two_tower, ann_index)``, held beside production."""
        from retrieval.sources import SourceUnavailable

        self._ensure_polling()
        if query.tenant_id != tenant:
            raise PermissionError("query is for another tenant")
        if pin is None:
            source = self.two_tower.source(tenant)  # read once: this request runs on one pair
        else:
            source = await self.two_tower.pinned_source(tenant, pin)
        if source is None:
            raise SourceUnavailable(f"no {self.registry.uri} two_tower/ann_index for the alias")
        # Inline, not in a worker thread: this replica does nothing else, and a thread hand-off
        # costs a GIL switch (up to the 5 ms switch interval under load) on every request.
        with tracing.span("two_tower.retrieve") as sp:
            ids, scores, vector = source.retrieve_columns(query, user_state, limit)
            if sp is not None:
                sp.set_attributes({"recsys.candidates": len(ids), "recsys.limit": limit,
                                   **tracing.versions_attributes(source.artifacts.versions)})  # fmt: skip
        return (ids, scores, {"history_len": len(user_state.history)}, source.version,
                dict(source.artifacts.versions), vector)  # fmt: skip

    async def versions(self) -> dict[str, dict[str, str]]:
        return self.two_tower.versions()

    async def refresh_now(self) -> dict[str, bool]:
        """Check every alias now (operators and tests; the poller does this periodically)."""
        return await self.two_tower.refresh_all()

    async def metrics_text(self) -> str:
        return metrics.registry_text()
