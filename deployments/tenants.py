"""Every tenant's pipeline inside one ingress replica, assembled by
:func:`serving.served_config.build_served_stages` (the bootstrap config, the tenant's
production ``tenant_config`` document, its production ``rule_bundle``, its kill switches) with handle-backed stages where the
app's placement puts a stage in another deployment (:class:`deployments.stages.HandleStages`),
and swapped live when the registry says the tenant's config, rule bundle or switches changed."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from core.config import ConfigError, PlatformConfig
from core.kill_switches import KillSwitchError
from core.kill_switches import read_state as read_kill_switches
from core.registry import Registry
from core.rule_bundle import INLINE
from core.rule_bundle import KIND as RULE_BUNDLE
from core.rule_bundle import load_published as load_bundle
from core.tenant_config import BOOTSTRAP, load_published
from core.tenant_config import KIND as TENANT_CONFIG
from deployments import metrics
from deployments.hot_swap import Refused, RuntimeSlot, poll_forever
from deployments.loaders import ServingContext, load_catalogues, load_events, load_users
from deployments.settings import AppArgs
from deployments.stages import HandleStages
from serving.assembly import TenantData, TenantModels
from serving.fallback_list import FallbackList, load_fallback_list
from serving.faults import FaultInjection, FaultSwitch
from serving.pipeline import RecommendationPipeline
from serving.served_config import build_served_stages, served_platform
from serving.stages import TenantStages

logger = logging.getLogger("ray.serve")


RECENT_EVENTS = 50_000
"""Live events a replica remembers per tenant, to replay into a rebuilt pipeline the events
that reached it while the rebuild read the event log (deduplicated by ``event_id``)."""


class LivePopularity:
    """The popularity counter of the tenant's *current* stages, read on each call: a ranker
    loaded into this replica keeps reading live counts across config swaps. Read by catalogue
    row (:meth:`core.features.PopularityCounter.align`) like the counter itself: by id it was
    two dict lookups per candidate, ≈ 0.2 ms a request on a 10^5-item counter."""

    def __init__(self, current: Callable[[], Any]):
        self._current = current

    def align(self, catalogue: Any) -> Any:
        """The current counter's values by ``catalogue`` row (built once per counter: a
        rebuilt pipeline's counter is aligned when it is built, :meth:`TenantPipelines._build`)."""
        return self._current().align(catalogue)

    def values(self, item_ids: Any, now: Any, **by_row: Any) -> Any:
        return self._current().values(item_ids, now, **by_row)


class TenantPipelines:
    """One :class:`RecommendationPipeline` per tenant, rebuilt and swapped live when the
    tenant's production ``tenant_config``, its production ``rule_bundle`` or its kill switches
    change (:meth:`ensure_polling`;
    :class:`deployments.hot_swap.RuntimeSlot` does the watching, as for models). A rebuild
    reads the event log again in a worker thread, replays the live events that arrived
    meanwhile, then swaps the stages in one assignment: a request runs wholly on the old or
    the new config. A document that does not apply (or switches that leave a surface without
    sources) is refused: logged, counted, and the old stages keep serving."""

    def __init__(self, ctx: ServingContext, args: AppArgs, config: PlatformConfig,
                 handles: Mapping[str, Any], two_tower: Any = None,
                 ranker: Any = None, catalogues: Mapping[str, Any] | None = None):  # fmt: skip
        """``two_tower`` / ``ranker``: the replica's :class:`deployments.model_slots.TwoTowerSlots`
        / ``RankerSlots`` where the placement puts the two-tower source / the ranker in the
        ingress. ``catalogues``: tenant → catalogue the replica already loaded (the one its
        model slots use; else loaded here)."""
        self.faults = FaultSwitch(args.faults)
        self.ctx, self.config, self.placement = ctx, config, args.placement
        placement = args.placement
        local_sources = any(
            placement.deployment_for(s.kind) is None
            for t in config.tenants for surf in t.surfaces.values() for s in surf.sources
        )  # fmt: skip
        # This replica holds online state that accepted events must reach.
        self.holds_state = placement.user_state == "ingress" or local_sources
        self.catalogues = load_catalogues(ctx, [t.id for t in config.tenants], catalogues)
        self.pipelines: dict[str, RecommendationPipeline] = {}
        self.config_slots: dict[str, RuntimeSlot] = {}
        self.registry = Registry(ctx.registry)
        self._remote = {t.id: HandleStages(t.id, placement, handles, default_ranker=ctx.alias,
                                           two_tower=two_tower, ranker=ranker)
                        for t in config.tenants}  # fmt: skip
        self._recent = {t.id: deque(maxlen=RECENT_EVENTS) for t in config.tenants}
        self._poller: asyncio.Task | None = None
        for tenant in config.tenants:
            t = tenant.id
            slot = RuntimeSlot(f"tenant_config[{t}]", resolve=lambda t=t: self._config_key(t),
                               load=lambda key, t=t: self._build(t, key),
                               on_event=lambda outcome, key, err, t=t: self._config_event(t, outcome, key))  # fmt: skip
            try:
                key = self._config_key(t)
                stages, _ = self._build(t, key)
            except Exception:  # an unreadable registry or a bad document: serve the bootstrap
                logger.exception("tenant %s: cannot apply its production tenant_config; "
                                 "serving platform.yaml", t)  # fmt: skip
                key = None
                stages, _ = self._build(t, (BOOTSTRAP, None, 0), bootstrap=True)
            slot.runtime, slot.key = stages, key
            self.config_slots[t] = slot
            self.pipelines[t] = RecommendationPipeline(stages)

    # ---- the served config of each tenant -------------------------------------------------

    def _config_key(self, tenant: str) -> tuple[str, str | None, int]:
        """``(production tenant_config version or platform.yaml, production rule_bundle version
        or None, kill-switch revision)``."""
        version = self.registry.resolve(TENANT_CONFIG, tenant, self.ctx.alias) or BOOTSTRAP
        rules = self.registry.resolve(RULE_BUNDLE, tenant, self.ctx.alias)
        return version, rules, read_kill_switches(self.registry, tenant).revision

    def _build(self, tenant: str, key: tuple[str, str | None, int],
               bootstrap: bool = False) -> tuple[TenantStages, frozenset]:  # fmt: skip
        """The tenant's stages under ``key`` and the event ids they were built from (blocking:
        a worker thread). :class:`Refused` when the document, the rule bundle or the switches
        do not apply."""
        version, rules = key[0], key[1]
        try:
            document = None if version == BOOTSTRAP else load_published(self.registry, tenant, version)
            bundle = None if bootstrap or rules is None else (rules, load_bundle(self.registry, tenant, rules))
            switches = None if bootstrap else read_kill_switches(self.registry, tenant)
            served_platform(self.config, tenant, document, switches, version, bundle)  # refuse early
        except (ConfigError, KillSwitchError) as exc:
            raise Refused(f"tenant_config {version}, rule_bundle {rules or INLINE}: {exc}") from None
        # Online state starts from the event log: user state, trending, co-occurrence and
        # the popularity the ranker fallback uses. Later events arrive by broadcast.
        events = load_events(self.ctx, tenant) if self.holds_state else None
        users = load_users(self.ctx, tenant) if self.placement.user_state == "ingress" else None
        models = TenantModels(fallback_list=_fallback_list(self.registry, tenant),
                              extra={"registry": self.registry})  # fmt: skip
        stages = build_served_stages(self.config, tenant, TenantData(self.catalogues[tenant], events, users),
                                     models, document=document, version=version, switches=switches, bundle=bundle,
                                     remote=self._remote[tenant], faults=self.faults)  # fmt: skip
        catalogue, popularity = self.catalogues[tenant], getattr(stages, "popularity", None)
        if self.placement.ranker == "ingress" and catalogue is not None and hasattr(popularity, "align"):
            # This replica's ranker reads the counter by row (LivePopularity): aligned here,
            # off the event loop, not on the first request after a swap.
            popularity.align(catalogue)
        seen = frozenset()
        if events is not None:
            logger.info("ingress %s: online state from %d events (tenant_config %s)", tenant,
                        events.num_rows, version)  # fmt: skip
            if "event_id" in events.column_names:
                seen = frozenset(events["event_id"].to_pylist())
        return stages, seen

    def _config_event(self, tenant: str, outcome: str, key) -> None:
        metrics.HOT_SWAPS.labels(tenant, "tenant_config", outcome).inc()
        if outcome != "swapped":
            return
        slot = self.config_slots[tenant]
        stages, seen = slot.runtime
        # Runs on the event loop right after the load: no event can arrive between the replay
        # and the swap.
        replayed = [e for e in self._recent[tenant] if e.get("event_id") not in seen]
        for event in replayed:
            stages.observe(event)
        slot.runtime = stages
        self.pipelines[tenant].swap(stages)
        logger.info("tenant %s: serving tenant_config %s, rule_bundle %s (kill-switch revision %s); "
                    "%d live events replayed", tenant, key[0], stages.versions.get("rule_bundle"), key[2],
                    len(replayed))  # fmt: skip

    def served(self, tenant: str) -> dict[str, Any]:
        """What ``GET /v1/versions`` shows: the tenant config and rule bundle versions and the
        kill switches."""
        stages = self.pipelines[tenant].stages
        switches = read_kill_switches(self.registry, tenant)
        live = {f"kill_switch:{s.label}" for s in switches.off} & set(stages.degraded)
        return {
            "tenant_config": stages.versions.get("tenant_config", BOOTSTRAP),
            "rule_bundle": stages.versions.get("rule_bundle", INLINE),
            "kill_switches": [{"target": s.target, "name": s.name, "reason": s.reason, "actor": s.actor,
                               "at": s.at.isoformat(), "live": f"kill_switch:{s.label}" in live}
                              for s in switches.off],
        }  # fmt: skip

    async def refresh_configs(self) -> dict[str, bool]:
        """Check every tenant's config and rule bundle aliases and switches now: ``tenant → swapped``."""
        return {t: await s.refresh() for t, s in self.config_slots.items()}

    def ensure_polling(self, interval_s: Callable[[], float]) -> None:
        """Start (or restart, after a crash) the config poller on the running loop."""
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(
                poll_forever(lambda: list(self.config_slots.values()), interval_s)
            )

    def surfaces(self, tenant: str) -> Mapping[str, Any]:
        """The tenant's surfaces as served now (events name them)."""
        return self.pipelines[tenant].stages.tenant.surfaces

    def observe(self, tenant: str, events: list[dict]) -> int:
        pipeline = self.pipelines.get(tenant)
        if pipeline is None:
            return 0
        self._recent[tenant].extend(events)
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
