"""Ranker deployment: the multi-task ranker of each tenant behind ``@serve.batch``.

Thin wrapper over :class:`ranking.scorer.RankerScorer` (loaded by
:func:`serving.loaders.load_ranker`): per request it builds features, then concatenates every
request of a batch into one forward pass (``score_batch``); the ingress composes utilities. Batch size and wait come from
``user_config`` (:class:`deployments.settings.RankerUserConfig`) and change live; ``device``
is ``auto`` (GPU if the replica has one), ``cpu`` or ``cuda``. Models are loaded from the
registry alias and hot-swapped like the retriever's. Popularity (a ranker feature) counts
live events, which ``POST /v1/events`` broadcasts to every replica.

Besides production, each replica holds the ranker versions experiment arms pin
(:class:`deployments.model_slots.PinnedVersions`: the config's pins loaded at start, others
on first use, LRU-bounded), so an arm is scored by its own version; the answer names it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import numpy as np
from ray import serve

from core.contracts import Query
from core.features import observe_popularity, popularity_from_events
from core.registry import Registry
from deployments import metrics
from deployments.hot_swap import RuntimeSlot, poll_forever
from deployments.loaders import ServingContext, load_catalogue, load_events, settle_replica
from deployments.model_slots import PinnedVersions, pinned_rankers, ranker_for_version
from deployments.settings import RankerUserConfig
from serving import tracing
from serving.loaders import load_ranker

logger = logging.getLogger("ray.serve")


class RankerUnavailable(RuntimeError):
    pass


def _raised(answer):
    if isinstance(answer, BaseException):
        raise answer
    return answer


@serve.deployment(name="Ranker", ray_actor_options={"num_cpus": 0.4}, max_ongoing_requests=64)
class RankerDeployment:
    async def __init__(self, ctx: ServingContext):
        self.settings = RankerUserConfig()
        self.registry = Registry(ctx.registry)
        self.catalogues, self.popularity, self.slots = {}, {}, {}
        for tenant in ctx.platform().tenants:
            t = tenant.id
            self.catalogues[t] = load_catalogue(ctx, t)
            self.popularity[t] = popularity_from_events(load_events(ctx, t))
            self.slots[t] = RuntimeSlot(
                f"ranker[{t}]",
                resolve=lambda t=t: self.registry.resolve("ranker", t, ctx.alias),
                load=lambda version, t=t: self._load(t, version),
                on_event=lambda outcome, key, err, t=t: self._swapped(t, outcome, key),
            )
        for slot in self.slots.values():
            await slot.refresh()
        self.pinned = PinnedVersions(self._load)
        await self.pinned.warm(pinned_rankers(ctx.platform()))
        settle_replica()
        self._poller = asyncio.get_running_loop().create_task(
            poll_forever(lambda: list(self.slots.values()), lambda: self.settings.poll_interval_s)
        )

    def _load(self, tenant: str, version: str):
        catalogue = self.catalogues[tenant]
        if catalogue is None:
            raise RankerUnavailable(f"no catalogue for {tenant}")
        return load_ranker(self.registry, tenant, version, catalogue, self.popularity[tenant],
                           device=self.settings.device)  # fmt: skip

    def _swapped(self, tenant: str, outcome: str, version) -> None:
        metrics.HOT_SWAPS.labels(tenant, "ranker", outcome).inc()
        if outcome == "swapped":
            metrics.set_versions(tenant, {"ranker": version})

    def reconfigure(self, user_config: dict) -> None:
        self.settings = RankerUserConfig.model_validate(user_config or {})
        self._score.set_max_batch_size(self.settings.max_batch_size)
        self._score.set_batch_wait_timeout_s(self.settings.batch_wait_timeout_s)

    async def _scorer(self, query: Query, n: int, version: str | None):
        """Production's scorer (read once; swaps do not affect us), or the arm's pinned one."""
        slot = self.slots.get(query.tenant_id)
        production = slot.runtime if slot is not None else None
        try:
            scorer = await ranker_for_version(production, self.pinned, query.tenant_id, version)
        except Exception as exc:
            raise RankerUnavailable(f"ranker {version} for {query.tenant_id}: {exc}") from exc
        if scorer is None:
            raise RankerUnavailable(f"no ranker loaded for {query.tenant_id}")
        metrics.RANKER_CANDIDATES.labels(query.tenant_id).observe(n)
        return scorer

    async def score_columns(self, query: Query, user_state, item_ids: list[str],
                            retrieval_scores: np.ndarray, sources: list[str],
                            task_weights: Mapping[str, float], version: str | None = None,
                            query_vectors: Mapping[str, np.ndarray] | None = None,
                            ) -> tuple[dict[str, np.ndarray], str]:  # fmt: skip
        """:meth:`score` over :func:`ranking.scorer.candidate_columns` (what the ingress
        sends): ``{task: (B,)}`` probabilities, composed into utilities by the caller.
        ``query_vectors``: ``{two-tower version: query vector}`` from the request's sources;
        the scorer's ``retrieval_score`` uses the one of its own two-tower version and
        encodes the user here otherwise."""
        with tracing.span("ranker.score") as sp:
            scorer = await self._scorer(query, len(item_ids), version)
            cols = (item_ids, retrieval_scores, sources, None, query_vectors)
            probs = _raised(await self._score(scorer, query, user_state, cols, task_weights))
            if sp is not None:
                sp.set_attributes({"recsys.candidates": len(item_ids),
                                   "recsys.version.ranker": scorer.version})  # fmt: skip
        return probs, scorer.version

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _score(self, scorers, queries, states, columns, weights):
        metrics.RANKER_BATCH_SIZE.observe(len(queries))
        return self._score_sync(scorers, queries, states, columns, weights)

    @staticmethod
    def _score_sync(scorers, queries, states, columns, weights):
        from ranking.utility import check_task_weights

        out: list = [None] * len(queries)
        by_model: dict[int, list[int]] = {}
        for i, scorer in enumerate(scorers):
            by_model.setdefault(id(scorer), []).append(i)
        for idx in by_model.values():  # one forward pass per (tenant, version) in the batch
            scorer = scorers[idx[0]]
            feats, ok = [], []
            for i in idx:
                try:  # a bad request fails alone, not the requests batched with it
                    check_task_weights(weights[i], scorer.tasks)
                    feats.append(scorer.features_for(queries[i], states[i], *columns[i]))
                    ok.append(i)
                except Exception as exc:
                    out[i] = exc
            for i, probs in zip(ok, scorer.score_batch(feats) if feats else [], strict=True):
                out[i] = probs
        return out

    async def observe(self, tenant: str, events: list[dict]) -> int:
        counter = self.popularity.get(tenant)
        if counter is None:
            return 0
        mine = [e for e in events if e.get("tenant_id", tenant) == tenant]
        return sum(observe_popularity(counter, e) for e in mine)

    async def versions(self) -> dict[str, dict[str, str]]:
        return {t: {"ranker": s.key} for t, s in self.slots.items() if s.key}

    async def pinned_versions(self) -> dict[str, list[str]]:
        """``tenant → [pinned versions loaded here]`` (experiment arms), LRU order."""
        return self.pinned.versions()

    async def refresh_now(self) -> dict[str, bool]:
        return {t: await s.refresh() for t, s in self.slots.items()}

    async def metrics_text(self) -> str:
        return metrics.registry_text()
