"""Each tenant's hot-swapped model, wherever it runs: the two-tower pair (query tower + ANN
index) and the ranker.

The ``TwoTowerRetriever`` deployment holds one :class:`TwoTowerSlots`; so does every Ingress
replica when ``placement.source_kinds.two_tower`` is ``ingress``. Every Ingress replica holds
one :class:`RankerSlots` when ``placement.ranker`` is ``ingress`` (the ``Ranker`` deployment
keeps its own otherwise). Either way a version is loaded from the registry alias in a worker
thread, refused when it does not fit (an index built by another item tower: the old pair
keeps serving), and swapped in one assignment (:class:`deployments.hot_swap.RuntimeSlot`);
a request reads the reference once. No Ray here: testable in process.

Experiment arms may pin a ranker version other than production
(``experiments[].variants[].overrides.ranker_version``). Whoever holds the ranker holds those
too, in a :class:`PinnedVersions` cache beside the production slot: the versions the config's
enabled arms pin are loaded before the replica takes traffic, any other pinned version on its
first request (in a worker thread, once however many requests ask), and at most
``max_versions`` stay loaded per replica (least recently used goes first). The arm is then
served by its own version, which the decision record names, never by a fallback.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from core.catalogue import Catalogue
from core.registry import Registry
from deployments import metrics
from deployments.hot_swap import RuntimeSlot, poll_forever
from deployments.loaders import ServingContext, load_catalogues
from serving.loaders import load_ranker, load_two_tower, two_tower_key

MAX_PINNED_VERSIONS = 4
"""Pinned (non-production) versions a replica keeps loaded: a few experiment arms at once."""
RETRY_FAILED_LOAD_S = 30.0
"""A pinned version that failed to load is not retried for this long (the arm's requests take
the ranker fallback meanwhile, and say so), so a bad pin cannot reload on every request."""


class PinnedVersions:
    """Runtimes of versions pinned by experiment arms, keyed ``(tenant, version)``; LRU-bounded.

    ``load(tenant, version)`` builds one (blocking: run in a worker thread). Concurrent
    requests for a version being loaded wait for that one load. A failed load is remembered
    for ``retry_after_s`` and re-raised to callers meanwhile."""

    def __init__(self, load: Callable[[str, str], Any], max_versions: int = MAX_PINNED_VERSIONS,
                 retry_after_s: float = RETRY_FAILED_LOAD_S, component: str = "ranker"):  # fmt: skip
        if max_versions < 1:
            raise ValueError("max_versions must be >= 1")
        self._load, self.max_versions = load, max_versions
        self.retry_after_s, self.component = retry_after_s, component
        self._loaded: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._loading: dict[tuple[str, str], asyncio.Future] = {}
        self._failed: dict[tuple[str, str], tuple[float, BaseException]] = {}

    async def get(self, tenant: str, version: str) -> Any:
        key = (tenant, version)
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        failed = self._failed.get(key)
        if failed is not None and time.monotonic() - failed[0] < self.retry_after_s:
            raise failed[1]
        pending = self._loading.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._load_into_cache(key))
            self._loading[key] = pending
        # shield: a caller's timeout must not cancel a load other callers wait for
        return await asyncio.shield(pending)

    async def _load_into_cache(self, key: tuple[str, str]) -> Any:
        try:
            runtime = await asyncio.to_thread(self._load, *key)
        except BaseException as exc:
            self._failed[key] = (time.monotonic(), exc)
            metrics.HOT_SWAPS.labels(key[0], f"{self.component}_pinned", "failed").inc()
            raise
        finally:
            self._loading.pop(key, None)
        self._failed.pop(key, None)
        self._loaded[key] = runtime
        while len(self._loaded) > self.max_versions:
            self._loaded.popitem(last=False)
        metrics.HOT_SWAPS.labels(key[0], f"{self.component}_pinned", "loaded").inc()
        return runtime

    async def warm(self, wanted: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
        """Load each ``(tenant, version)`` now (a replica's start: the config's pinned arms);
        ``key → None`` if loaded, else the error. A failure does not stop the others."""
        out: dict[tuple[str, str], str | None] = {}
        for key in list(dict.fromkeys(wanted))[: self.max_versions]:
            try:
                await self.get(*key)
                out[key] = None
            except Exception as exc:
                out[key] = f"{type(exc).__name__}: {exc}"
        return out

    def versions(self) -> dict[str, list[str]]:
        """``tenant → [pinned versions loaded]``, least recently used first."""
        out: dict[str, list[str]] = {}
        for tenant, version in self._loaded:
            out.setdefault(tenant, []).append(version)
        return out


async def ranker_for_version(slot_runtime: Any, pinned: PinnedVersions, tenant: str,
                             version: str | None) -> Any:  # fmt: skip
    """The scorer that serves ``version`` for ``tenant``: the production slot's when ``version``
    is ``None`` or the one production serves now, else the pinned one (loaded if need be)."""
    if version is None or (slot_runtime is not None and slot_runtime.version == version):
        return slot_runtime
    return await pinned.get(tenant, version)


class _Slots:
    """One :class:`RuntimeSlot` per tenant, an alias poller, and the versions they serve."""

    component = ""

    def __init__(self, ctx: ServingContext, catalogues: dict[str, Catalogue | None] | None):
        self.registry = Registry(ctx.registry)
        tenants = [t.id for t in ctx.platform().tenants]
        self.catalogues = load_catalogues(ctx, tenants, catalogues)
        self.slots: dict[str, RuntimeSlot] = {}
        self._poller: asyncio.Task | None = None
        for t in tenants:
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
        self.pinned = PinnedVersions(self._load, component="two_tower")
        self.wanted_pins = pinned_pairs(ctx.platform())

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

    def loaded_models(self, tenant: str) -> dict[str, Any]:
        """``two_tower version → model`` this replica holds for ``tenant`` now (production
        and pinned): a ranker loaded beside it shares the model, and so the query vector
        (:func:`retrieval.similarity.query_vectors`), instead of loading its own copy."""
        runtimes = [self.runtime(tenant)]
        runtimes += [r for (t, _), r in self.pinned._loaded.items() if t == tenant]
        return {r.artifacts.model_version: r.artifacts.model
                for r in runtimes if r is not None and r.artifacts is not None}  # fmt: skip

    async def refresh_all(self) -> dict[str, bool]:
        """Check every alias now, and load the pairs the config's arms pin if not loaded."""
        swapped = await super().refresh_all()
        await self.pinned.warm(self.wanted_pins)
        return swapped

    async def pinned_source(self, tenant: str, pin: tuple[str, str]):
        """The source of an experiment arm's ``(two_tower, ann_index)``: production's when the
        alias points at that pair now, else the pinned one (loaded if need be; a mismatched
        pair raises :class:`Refused`, and the arm's two-tower source fails for that request)."""
        slot = self.slots.get(tenant)
        if slot is not None and slot.key == tuple(pin):
            return slot.runtime
        return await self.pinned.get(tenant, tuple(pin))


class RankerSlots(_Slots):
    """Runtime: a :class:`ranking.scorer.RankerScorer` (model, catalogue features, live
    popularity, the similarity of its own two-tower); key: the ranker version."""

    component = "ranker"

    def __init__(self, ctx: ServingContext, popularity_of: Callable[[str], Any], device: str = "cpu",
                 catalogues: dict[str, Catalogue | None] | None = None,
                 towers: Callable[[str], dict[str, Any]] | None = None):  # fmt: skip
        """``popularity_of(tenant)``: the live :class:`core.features.PopularityCounter` the
        ranker's popularity feature reads (the replica's own, kept up to date by events).
        ``towers(tenant)``: two-tower models this replica already holds (version → model),
        shared with a ranker trained on one of them (:meth:`TwoTowerSlots.loaded_models`)."""
        self.device, self.popularity_of, self.towers = device, popularity_of, towers
        super().__init__(ctx, catalogues)
        self.pinned = PinnedVersions(self._load)
        self.wanted_pins = pinned_rankers(ctx.platform())

    async def refresh_all(self) -> dict[str, bool]:
        """Check every alias now, and load the versions the config's arms pin if not loaded."""
        swapped = await super().refresh_all()
        await self.pinned.warm(self.wanted_pins)
        return swapped

    async def scorer(self, tenant: str, version: str | None) -> Any:
        """The scorer serving ``version`` (``None``: production) for ``tenant``, or ``None``
        when no production ranker is loaded and no version is pinned."""
        return await ranker_for_version(self.runtime(tenant), self.pinned, tenant, version)

    def _resolve(self, tenant: str, alias: str):
        return self.registry.resolve("ranker", tenant, alias)

    def _load(self, tenant: str, version: str):
        catalogue = self.catalogues[tenant]
        if catalogue is None:
            raise RuntimeError(f"no catalogue for {tenant}: no ranker features")
        return load_ranker(self.registry, tenant, version, catalogue, self.popularity_of(tenant),
                           device=self.device,
                           loaded_towers=self.towers(tenant) if self.towers else None)  # fmt: skip

    def _versions(self, key) -> dict[str, str]:
        return {"ranker": key}


def pinned_pairs(platform: Any) -> list[tuple[str, tuple[str, str]]]:
    """``(tenant, (two_tower, ann_index))`` of every pair an enabled experiment arm pins."""
    from core.experiments import pinned_two_towers

    return pinned_two_towers(platform.experiments)


def pinned_rankers(platform: Any) -> list[tuple[str, str]]:
    """``(tenant, version)`` of every ranker version an enabled experiment arm pins, besides
    the alias (``production``/``candidate``) names, in config order."""
    from core.experiments import pinned_versions

    return [(t, v) for t, v in pinned_versions(platform.experiments, "ranker_version")
            if v not in ("production", "candidate", "previous")]  # fmt: skip
