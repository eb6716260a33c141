"""Each tenant's hot-swapped two-tower pair (query tower + ANN index), wherever it runs.

The ``TwoTowerRetriever`` deployment holds one :class:`TwoTowerSlots`; so does every Ingress
replica when ``placement.source_kinds.two_tower`` is ``ingress`` (one Serve hop fewer per
request, :class:`deployments.stages.LocalTwoTowerSource`). Either way a pair is loaded from the
registry alias, refused when its index was built by another item tower (the old pair keeps
serving), and swapped in one assignment (:class:`deployments.hot_swap.RuntimeSlot`).
No Ray here: testable in process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from core.catalogue import Catalogue
from core.registry import Registry
from deployments import metrics
from deployments.hot_swap import RuntimeSlot, poll_forever
from deployments.loaders import ServingContext, load_catalogue
from serving.loaders import load_two_tower, two_tower_key


class TwoTowerSlots:
    def __init__(self, ctx: ServingContext, device: str = "cpu",
                 catalogues: dict[str, Catalogue | None] | None = None):  # fmt: skip
        """``catalogues``: tenant → catalogue already loaded by the caller (else loaded here)."""
        self.registry = Registry(ctx.registry)
        self.catalogues = dict(catalogues or {})
        self.slots: dict[str, RuntimeSlot] = {}
        self._poller: asyncio.Task | None = None
        for tenant in ctx.platform().tenants:
            t = tenant.id
            if t not in self.catalogues:
                self.catalogues[t] = load_catalogue(ctx, t)
            self.slots[t] = RuntimeSlot(
                f"two_tower[{t}]",
                resolve=lambda t=t: two_tower_key(self.registry, t, ctx.alias),
                load=lambda key, t=t: self._source(t, key, device),
                on_event=lambda outcome, key, err, t=t: self._swapped(t, outcome, key),
            )

    def _source(self, tenant: str, key: tuple[str, str], device: str):
        from retrieval.sources import TwoTowerSource

        artifacts = load_two_tower(self.registry, tenant, key, device)
        return TwoTowerSource("two_tower", artifacts, self.catalogues[tenant])

    @staticmethod
    def _swapped(tenant: str, outcome: str, key) -> None:
        metrics.HOT_SWAPS.labels(tenant, "two_tower", outcome).inc()
        if outcome == "swapped":
            metrics.set_versions(tenant, {"two_tower": key[0], "ann_index": key[1]})

    def source(self, tenant: str):
        """The tenant's current :class:`retrieval.sources.TwoTowerSource` (read once per
        request), or ``None`` when nothing is loaded."""
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
        return {t: {"two_tower": s.key[0], "ann_index": s.key[1]}
                for t, s in self.slots.items() if s.key}  # fmt: skip
