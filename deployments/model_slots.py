"""Each tenant's hot-swapped model, wherever it runs: the two-tower pair (query tower + ANN
index) and the ranker.

The ``TwoTowerRetriever`` deployment holds one :class:`TwoTowerSlots`; so does every Ingress
replica when ``placement.source_kinds.two_tower`` is ``ingress``. Every Ingress replica holds
one :class:`RankerSlots` when ``placement.ranker`` is ``ingress`` (the ``Ranker`` deployment
keeps its own otherwise). Either way a version is loaded from the registry alias in a worker
thread, refused when it does not fit (an index built by another item tower: the old pair
keeps serving), and swapped in one assignment (:class:`deployments.hot_swap.RuntimeSlot`);
a request reads the reference once. No Ray here: testable in process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from core.catalogue import Catalogue
from core.registry import Registry
from deployments import metrics
from deployments.hot_swap import RuntimeSlot, poll_forever
from deployments.loaders import ServingContext, load_catalogue
from serving.loaders import load_ranker, load_two_tower, two_tower_key


class _Slots:
    """One :class:`RuntimeSlot` per tenant, an alias poller, and the versions they serve."""

    component = ""

    def __init__(self, ctx: ServingContext, catalogues: dict[str, Catalogue | None] | None):
        self.registry = Registry(ctx.registry)
        self.catalogues = dict(catalogues or {})
        self.slots: dict[str, RuntimeSlot] = {}
        self._poller: asyncio.Task | None = None
        for tenant in ctx.platform().tenants:
            t = tenant.id
            if t not in self.catalogues:
                self.catalogues[t] = load_catalogue(ctx, t)
            self.slots[t] = RuntimeSlot(
                f"{self.component}[{t}]",
                resolve=lambda t=t: self._resolve(t, ctx.alias),
                load=lambda key, t=t: self._load(t, key),
                on_event=lambda outcome, key, err, t=t: self._swapped(t, outcome, key),
            )

    def _resolve(self, tenant: str, alias: str) -> Any:
        raise NotImplementedError

    def _load(self, tenant: str, key: Any) -> Any:
        raise NotImplementedError

    def _versions(self, key: Any) -> dict[str, str]:
        raise NotImplementedError

    def _swapped(self, tenant: str, outcome: str, key) -> None:
        metrics.HOT_SWAPS.labels(tenant, self.component, outcome).inc()
        if outcome == "swapped":
            metrics.set_versions(tenant, self._versions(key))

    def runtime(self, tenant: str) -> Any:
        """The tenant's current runtime (read once per request), or ``None`` if none loaded."""
        slot = self.slots.get(tenant)
        return None if slot is None else slot.runtime

    async def refresh_all(self) -> dict[str, bool]:
        """Check every alias now; ``tenant → swapped``."""
        return {t: await s.refresh() for t, s in self.slots.items()}

    def ensure_polling(self, interval_s: Callable[[], float]) -> None:
        """Start (or restart, after a crash) the alias poller on the running loop."""
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(
                poll_forever(lambda: list(self.slots.values()), interval_s)
            )

    def versions(self) -> dict[str, dict[str, str]]:
        return {t: self._versions(s.key) for t, s in self.slots.items() if s.key}


class TwoTowerSlots(_Slots):
    """Runtime: a :class:`retrieval.sources.TwoTowerSource`; key ``(two_tower, ann_index)``."""

    component = "two_tower"

    def __init__(self, ctx: ServingContext, device: str = "cpu",
                 catalogues: dict[str, Catalogue | None] | None = None):  # fmt: skip
        """``catalogues``: tenant → catalogue already loaded by the caller (else loaded here)."""
        self.device = device
        super().__init__(ctx, catalogues)

    def _resolve(self, tenant: str, alias: str):
        return two_tower_key(self.registry, tenant, alias)

    def _load(self, tenant: str, key):
        from retrieval.sources import TwoTowerSource

        artifacts = load_two_tower(self.registry, tenant, key, self.device)
        return TwoTowerSource("two_tower", artifacts, self.catalogues[tenant])

    def _versions(self, key) -> dict[str, str]:
        return {"two_tower": key[0], "ann_index": key[1]}

    def source(self, tenant: str):
        return self.runtime(tenant)


class RankerSlots(_Slots):
    """Runtime: a :class:`ranking.scorer.RankerScorer` (model, catalogue features, live
    popularity, the similarity of its own two-tower); key: the ranker version."""

    component = "ranker"

    def __init__(self, ctx: ServingContext, popularity_of: Callable[[str], Any], device: str = "cpu",
                 catalogues: dict[str, Catalogue | None] | None = None):  # fmt: skip
        """``popularity_of(tenant)``: the live :class:`core.features.PopularityCounter` the
        ranker's popularity feature reads (the replica's own, kept up to date by events)."""
        self.device, self.popularity_of = device, popularity_of
        super().__init__(ctx, catalogues)

    def _resolve(self, tenant: str, alias: str):
        return self.registry.resolve("ranker", tenant, alias)

    def _load(self, tenant: str, version: str):
        catalogue = self.catalogues[tenant]
        if catalogue is None:
            raise RuntimeError(f"no catalogue for {tenant}: no ranker features")
        return load_ranker(self.registry, tenant, version, catalogue, self.popularity_of(tenant),
                           device=self.device)  # fmt: skip

    def _versions(self, key) -> dict[str, str]:
        return {"ranker": key}
