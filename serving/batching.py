"""Micro-batched stages for offline jobs: many users' requests through the one pipeline, their
model work in one pass (no Ray; ``training.batch_score`` runs it inside Ray Data actors).

:class:`RecommendationPipeline` handles one request. Run many ``recommend`` coroutines at once
on one event loop and each reaches the two-tower source and the ranker at about the same time;
the stages here hold those calls briefly (:class:`MicroBatcher`) and answer them together:

* :class:`BatchedTwoTowerSource`: one query-tower forward pass ``(B, D)`` and one ANN search
  for ``B`` users (:meth:`retrieval.sources.TwoTowerSource.query_vectors` / ``search``);
* :class:`BatchedRanker`: features per request, then one ranker forward pass over every
  request's candidates (:meth:`ranking.scorer.RankerScorer.score_batch`), as ``@serve.batch``
  does in the Ranker deployment.

Results are exactly the unbatched stages' (same functions, same inputs); only the number of
forward passes changes. They plug into :func:`serving.assembly.build_tenant_stages` as a
:class:`serving.assembly.RemoteStages` (:class:`BatchStages`). :mod:`serving.batch` calls
their ``retrieve_many`` / ``score_many`` directly (no event-loop gathering, no timeouts).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from core.contracts import MergedCandidate, Query, RankerResult, SourceResult
from ranking.utility import check_task_weights
from retrieval.sources.base import SourceUnavailable, result_from_columns

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """Collects calls made concurrently on one event loop and runs ``fn`` once over them
    (in a worker thread, so the loop keeps running). A batch closes at ``max_batch`` calls or
    when ``idle_ticks`` loop iterations pass without a new call: every coroutine that is about
    to call has then called. ``fn`` returns one result (or exception) per call, in order."""

    def __init__(self, fn: Callable[[list[T]], list[R | BaseException]], max_batch: int = 512, idle_ticks: int = 3):
        self.fn, self.max_batch, self.idle_ticks = fn, max_batch, idle_ticks
        self._pending: list[tuple[T, asyncio.Future]] = []
        self._waiter: asyncio.Task | None = None
        self.batches = 0
        self.calls = 0

    async def __call__(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._waiter is None:
            self._waiter = loop.create_task(self._close_when_idle())
        return await future

    async def _close_when_idle(self) -> None:
        seen, idle = -1, 0
        while idle < self.idle_ticks:
            await asyncio.sleep(0)
            idle = idle + 1 if len(self._pending) == seen else 0
            seen = len(self._pending)
        self._waiter = None
        self._flush()

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        self.batches += 1
        self.calls += len(batch)
        asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[tuple[T, asyncio.Future]]) -> None:
        try:
            results = await asyncio.to_thread(self.fn, [item for item, _ in batch])
        except Exception as exc:  # the whole batch failed: every caller sees why
            results = [exc] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # the caller gave up (its timeout)
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


class BatchedTwoTowerSource:
    """A :class:`retrieval.sources.TwoTowerSource` whose concurrent calls share one query-tower
    pass and one index search (per ``(surface, now, limit)``)."""

    def __init__(self, source: Any, max_batch: int = 512):
        self.source = source
        self.name, self.kind, self.version = source.name, source.kind, source.version
        self.batcher: MicroBatcher = MicroBatcher(self._batch, max_batch)

    async def retrieve(self, query: Query, user_state: Any, limit: int) -> SourceResult:
        return await self.batcher((query, user_state, limit))

    def retrieve_many(self, queries: Sequence[Query], states: Sequence[Any],
                      limit: int) -> list[SourceResult | BaseException]:  # fmt: skip
        """Every query's answer at once, on the calling thread (:mod:`serving.batch`)."""
        return self._batch([(q, s, limit) for q, s in zip(queries, states, strict=True)])

    def _batch(self, calls: list[tuple[Query, Any, int]]) -> list[SourceResult | BaseException]:
        src = self.source
        if src.artifacts is None or src.catalogue is None:
            return [SourceUnavailable(f"{src.name}: two-tower model/index or catalogue not loaded")] * len(calls)
        out: list[Any] = [None] * len(calls)
        groups: dict[tuple[str, float, int], list[int]] = {}
        for i, (q, _, limit) in enumerate(calls):
            groups.setdefault((q.surface, q.now.timestamp(), limit), []).append(i)
        for (surface, now, limit), idx in groups.items():
            states = [calls[i][1] for i in idx]
            hits = src.search_columns(src.query_vectors(states, surface, now), limit)
            for i, (ids, scores) in zip(idx, hits, strict=True):
                out[i] = result_from_columns(src.name, src.version, ids, scores, {"history_len": len(calls[i][1].history)},
                                             versions=src.artifacts.versions)  # fmt: skip
        return out


class BatchedRanker:
    """A :class:`ranking.scorer.RankerScorer` whose concurrent ``score`` calls share one
    forward pass."""

    def __init__(self, scorer: Any, max_batch: int = 512):
        self.scorer = scorer
        self.version = scorer.version
        self.batcher: MicroBatcher = MicroBatcher(self._batch, max_batch)

    async def score(self, query: Query, user_state: Any, candidates: Sequence[MergedCandidate],
                    task_weights: Mapping[str, float], *,
                    query_vectors: Mapping[str, Any] | None = None) -> RankerResult:  # fmt: skip
        # ``query_vectors`` unused: a batch encodes its users in one pass (``prime`` below).
        return await self.batcher((query, user_state, candidates, task_weights))

    def score_many(self, calls: list[tuple]) -> list[RankerResult | BaseException]:
        """``(query, state, candidates, task_weights)`` calls in one forward pass, on the calling
        thread (:mod:`serving.batch`)."""
        return self._batch(calls)

    def _batch(self, calls: list[tuple]) -> list[RankerResult | BaseException]:
        out: list[Any] = [None] * len(calls)
        feats, ok = [], []
        similarity = getattr(self.scorer, "similarity", None)
        if hasattr(similarity, "prime"):  # the feature's query vectors: one pass per (surface, now)
            groups: dict[tuple[str, float], list[Any]] = {}
            for query, state, _, _ in calls:
                groups.setdefault((query.surface, query.now.timestamp()), []).append(state)
            for (surface, now), states in groups.items():
                similarity.prime(states, surface=surface, now=now)
        for i, (query, state, candidates, weights) in enumerate(calls):
            try:  # one bad request fails alone
                check_task_weights(weights, self.scorer.tasks)
                feats.append(self.scorer.features(query, state, candidates))
                ok.append(i)
            except Exception as exc:
                out[i] = exc
        for i, probs in zip(ok, self.scorer.score_batch(feats) if feats else [], strict=True):
            _, _, candidates, weights = calls[i]
            out[i] = RankerResult(self.scorer.compose(candidates, probs, weights), self.version)
        return out


class BatchStages:
    """:class:`serving.assembly.RemoteStages` that batch the two model stages: the two-tower
    source of every surface (one batcher per source config) and the ranker."""

    def __init__(self, two_tower: Any, catalogue: Any, rankers: Mapping[str, Any], max_batch: int = 512):
        self.two_tower, self.catalogue, self.max_batch = two_tower, catalogue, max_batch
        self.rankers = {v: BatchedRanker(r, max_batch) for v, r in rankers.items()}
        self.sources: dict[str, BatchedTwoTowerSource] = {}

    def source(self, cfg: Any, surface: str) -> Any:
        if cfg.kind != "two_tower":
            return None
        from retrieval.sources import TwoTowerSource

        key = cfg.model_dump_json()
        if key not in self.sources:
            self.sources[key] = BatchedTwoTowerSource(TwoTowerSource(cfg.name, self.two_tower, self.catalogue), self.max_batch)
        return self.sources[key]

    def ranker(self, version: str | None) -> Any:
        return self.rankers.get(version) if version else None

    def user_state(self) -> None:
        return None

    def stats(self) -> dict[str, float]:
        """Calls and forward passes so far: the batching the job reports."""
        out = {}
        for name, stages in (("ranker", self.rankers.values()), ("two_tower", self.sources.values())):
            calls = sum(s.batcher.calls for s in stages)
            passes = sum(s.batcher.batches for s in stages)
            out[f"{name}_requests"], out[f"{name}_passes"] = calls, passes
        return out
