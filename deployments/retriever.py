"""Two-tower retrieval deployment: the query tower and the ANN index of each tenant, loaded
lazily from the registry alias (``production``) and hot-swapped when the alias moves.

Thin wrapper over :class:`retrieval.sources.TwoTowerSource`, one per tenant and loaded pair,
in a :class:`deployments.hot_swap.RuntimeSlot`; a pair whose index was built by another item
tower is refused (:func:`serving.loaders.load_two_tower`) and the old pair keeps serving.
"""

from __future__ import annotations

import asyncio
import logging

from ray import serve

from core.contracts import Query
from core.registry import Registry
from deployments import metrics
from deployments.hot_swap import RuntimeSlot, poll_forever
from deployments.loaders import ServingContext, load_catalogue, settle_replica
from deployments.settings import WatchUserConfig
from serving.loaders import load_two_tower, two_tower_key

logger = logging.getLogger("ray.serve")


@serve.deployment(name="TwoTowerRetriever", ray_actor_options={"num_cpus": 0.3}, max_ongoing_requests=32)
class TwoTowerRetrieverDeployment:
    async def __init__(self, ctx: ServingContext, device: str = "cpu"):
        self.settings = WatchUserConfig()
        self.registry = Registry(ctx.registry)
        self.catalogues = {}
        self.slots: dict[str, RuntimeSlot] = {}
        for tenant in ctx.platform().tenants:
            t = tenant.id
            self.catalogues[t] = load_catalogue(ctx, t)
            self.slots[t] = RuntimeSlot(
                f"two_tower[{t}]",
                resolve=lambda t=t: two_tower_key(self.registry, t, ctx.alias),
                load=lambda key, t=t: self._source(t, key, device),
                on_event=lambda outcome, key, err, t=t: self._swapped(t, outcome, key),
            )
        self._poller = None
        for slot in self.slots.values():  # load before taking traffic; then poll
            await slot.refresh()
        settle_replica()
        self._ensure_polling()

    def _source(self, tenant: str, key: tuple[str, str], device: str):
        from retrieval.sources import TwoTowerSource

        artifacts = load_two_tower(self.registry, tenant, key, device)
        return TwoTowerSource("two_tower", artifacts, self.catalogues[tenant])

    def _swapped(self, tenant: str, outcome: str, key) -> None:
        metrics.HOT_SWAPS.labels(tenant, "two_tower", outcome).inc()
        if outcome == "swapped":
            metrics.set_versions(tenant, {"two_tower": key[0], "ann_index": key[1]})

    def _ensure_polling(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(
                poll_forever(lambda: list(self.slots.values()), lambda: self.settings.poll_interval_s)
            )

    def reconfigure(self, user_config: dict) -> None:
        self.settings = WatchUserConfig.model_validate(user_config or {})

    async def retrieve_columns(self, tenant: str, surface: str, cfg, query: Query, user_state,
                               limit: int) -> tuple[list[str], list[float], dict, str, dict]:  # fmt: skip
        """The two-tower source's answer as columns (item ids, scores, diagnostics, source
        version, artifact versions): a few lists cross the hop instead of one object per
        candidate (:class:`deployments.stages.RemoteSource` rebuilds the result)."""
        from retrieval.sources import SourceUnavailable

        self._ensure_polling()
        if query.tenant_id != tenant:
            raise PermissionError("query is for another tenant")
        source = self.slots[tenant].runtime  # read once: this request runs on one pair
        if source is None:
            raise SourceUnavailable(f"no {self.registry.uri} two_tower/ann_index for the alias")
        # Inline, not in a worker thread: this replica does nothing else, and a thread hand-off
        # costs a GIL switch (up to the 5 ms switch interval under load) on every request.
        result = source.retrieve_now(query, user_state, limit)
        return ([c.item_id for c in result.candidates], [c.score for c in result.candidates],
                dict(result.diagnostics), result.version, dict(result.versions))  # fmt: skip

    async def versions(self) -> dict[str, dict[str, str]]:
        out = {}
        for t, slot in self.slots.items():
            if slot.key:
                out[t] = {"two_tower": slot.key[0], "ann_index": slot.key[1]}
        return out

    async def refresh_now(self) -> dict[str, bool]:
        """Check every alias now (operators and tests; the poller does this periodically)."""
        return {t: await s.refresh() for t, s in self.slots.items()}

    async def metrics_text(self) -> str:
        return metrics.registry_text()
