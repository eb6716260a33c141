"""Every tenant's pipeline inside one ingress replica, assembled by
:func:`serving.assembly.build_tenant_stages` with handle-backed stages where the app's
placement puts a stage in another deployment (:class:`deployments.stages.HandleStages`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from core.config import PlatformConfig
from core.registry import Registry
from deployments import metrics
from deployments.loaders import ServingContext, load_catalogue, load_events, load_users
from deployments.settings import AppArgs
from deployments.stages import HandleStages
from serving.assembly import TenantData, TenantModels, build_tenant_stages
from serving.fallback_list import FallbackList, load_fallback_list
from serving.faults import FaultInjection, FaultSwitch
from serving.pipeline import RecommendationPipeline

logger = logging.getLogger("ray.serve")


class TenantPipelines:
    def __init__(self, ctx: ServingContext, args: AppArgs, config: PlatformConfig,
                 handles: Mapping[str, Any], two_tower: Any = None,
                 ranker: Any = None):  # fmt: skip
        """``two_tower`` / ``ranker``: the replica's :class:`deployments.model_slots.TwoTowerSlots`
        / ``RankerSlots`` where the placement puts the two-tower source / the ranker in the
        ingress."""
        self.faults = FaultSwitch(args.faults)
        placement = args.placement
        local_sources = any(
            placement.deployment_for(s.kind) is None
            for t in config.tenants for surf in t.surfaces.values() for s in surf.sources
        )  # fmt: skip
        # This replica holds online state that accepted events must reach.
        self.holds_state = placement.user_state == "ingress" or local_sources
        self.catalogues = {t.id: load_catalogue(ctx, t.id) for t in config.tenants}
        self.pipelines: dict[str, RecommendationPipeline] = {}
        registry = Registry(ctx.registry)
        for tenant in config.tenants:
            t = tenant.id
            # Online state starts from the event log: user state, trending, co-occurrence and
            # the popularity the ranker fallback uses. Later events arrive by broadcast.
            events = load_events(ctx, t) if self.holds_state else None
            users = load_users(ctx, t) if placement.user_state == "ingress" else None
            remote = HandleStages(t, placement, handles, default_ranker=ctx.alias,
                                  two_tower=two_tower, ranker=ranker)  # fmt: skip
            models = TenantModels(fallback_list=_fallback_list(registry, t), extra={"registry": registry})
            stages = build_tenant_stages(config, t, TenantData(self.catalogues[t], events, users), models,
                                         remote=remote, faults=self.faults)  # fmt: skip
            self.pipelines[t] = RecommendationPipeline(stages)
            if events is not None:
                logger.info("ingress %s: online state from %d events", t, events.num_rows)

    def observe(self, tenant: str, events: list[dict]) -> int:
        pipeline = self.pipelines.get(tenant)
        if pipeline is None:
            return 0
        for event in events:
            pipeline.stages.observe(event)
        return len(events)

    def set_faults(self, faults: FaultInjection | Mapping[str, Any]) -> None:
        self.faults.set(faults)


def _fallback_list(registry: Registry, tenant: str) -> FallbackList | None:
    """The tenant's production fallback list (its expiry exported as a gauge), or None."""
    try:
        found = load_fallback_list(registry, tenant)
    except Exception:  # the config's list stays the last resort
        logger.exception("tenant %s: cannot load the production fallback_list", tenant)
        return None
    if found is not None:
        metrics.FALLBACK_LIST_EXPIRY.labels(tenant, found.version).set(found.expires_at.timestamp())
    return found


async def served_versions(handles: Mapping[str, Any], tenant: str,
                          local: Mapping[str, str] | None = None) -> dict[str, str]:  # fmt: skip
    """What the model deployments' replicas are serving for ``tenant`` now; a kind missing from
    the answer is not loaded (or its deployment did not answer within 5 s). ``local``: what
    this ingress replica serves itself (the two-tower, where placed here)."""
    found: dict[str, str] = dict(local or {})
    for name in ("TwoTowerRetriever", "Ranker"):
        if name not in handles:
            continue
        try:
            found.update((await asyncio.wait_for(handles[name].versions.remote(), 5.0)).get(tenant, {}))
        except Exception:  # noqa: BLE001
            continue
    return found
