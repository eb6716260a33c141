"""Micro-batched stages for offline jobs: many users' requests through the one pipeline, their
model work in one pass (no Ray; ``training.batch_score`` runs it inside Ray Data actors).

:class:`RecommendationPipeline` handles one request. Run many ``recommend`` coroutines at once
on one event loop and each reaches the two-tower source and the ranker at about the same time;
the stages here hold those calls briefly (:class:`MicroBatcher`) and answer them together:

* :class:`BatchedTwoTowerSource`: one query-tower forward pass ``(B, D)`` and one ANN search
  for ``B`` users (:meth:`retrieval.sources.TwoTowerSource.query_vectors` / ``search``);
* :class:`BatchedRanker`: every request's candidates stacked — their features in one pass
  (:func:`core.features.ranker_features_many`), one ranker forward pass
  (:meth:`ranking.scorer.RankerScorer.score_batch`), the utilities composed once — as
  ``@serve.batch`` does in the Ranker deployment.

Results are the unbatched stages' (same functions, same inputs); only the number of forward
passes changes. One caveat, measured: float32 matrix kernels round a ``(B, D)`` query-tower
pass and a ``(1, D)`` pass differently in the last bit, so a query vector (and through the
ranker's ``retrieval_score`` feature, a utility) can differ by ~1e-7 relative; where two
candidates' utilities tie within that, their order (and ``utility_rank`` reasons) may swap.
Encoding each user alone would make them bitwise equal at ≈ 0.12 ms more per user in a batch
job; the tests compare at a fixed time (``tests/unit/test_batch_recommend.py``).

They plug into :func:`serving.assembly.build_tenant_stages` as a
:class:`serving.assembly.RemoteStages` (:class:`BatchStages`). :mod:`serving.batch` calls
their ``retrieve_many`` / ``score_many`` directly (no event-loop gathering, no timeouts).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

from core.candidates import CandidateBatch, ScoredBatch
from core.contracts import MergedCandidate, Query, RankerResult, SourceResult
from core.features import ranker_features_many
from ranking.utility import check_task_weights, utility
from retrieval.similarity import query_vectors
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
        ok = []
        for i, (_, _, _, weights) in enumerate(calls):
            try:
                check_task_weights(weights, self.scorer.tasks)
                ok.append(i)
            except Exception as exc:
                out[i] = exc
        if not ok:
            return out
        try:
            scored = self._stacked([calls[i] for i in ok])
        except Exception as exc:
            if len(ok) == 1:
                scored = [exc]
            else:  # one bad request fails alone
                scored = [self._batch([calls[i]])[0] for i in ok]
        for i, res in zip(ok, scored, strict=True):
            out[i] = res if isinstance(res, BaseException) else RankerResult(res, self.version)
        return out

    def _stacked(self, calls: list[tuple]) -> list[ScoredBatch]:
        """Every call's candidates stacked: features in one pass
        (:func:`core.features.ranker_features_many`), one forward pass, the utilities composed
        once per set of task weights; each call's rows are what
        :meth:`ranking.scorer.RankerScorer.score` gives it alone."""
        sc = self.scorer
        batches = [CandidateBatch.of(c[2]) for c in calls]
        sizes = [len(b) for b in batches]
        ids = [i for b in batches for i in b.item_ids]
        rows = np.concatenate([b.rows(sc.catalogue) for b in batches])
        nows = [q.now.timestamp() for q, *_ in calls]
        states = [c[1] for c in calls]
        retrieval = self._retrieval_scores(calls, batches, nows)
        popularity = np.empty(len(ids))
        bounds = np.cumsum([0, *sizes]).tolist()
        for now, at in _groups(nows).items():  # one lookup per distinct item at each time
            pos = np.concatenate([np.arange(bounds[u], bounds[u + 1]) for u in at])
            popularity[pos] = _popularity(sc.popularity, sc.catalogue, [ids[p] for p in pos.tolist()], rows[pos], now)
        cat, dense = ranker_features_many(states, sizes, ids, sc.catalogue, popularity=popularity, now=nows,
                                          surface=[q.surface for q, *_ in calls], retrieval_scores=retrieval,
                                          sources=[s for b in batches for s in b.best_sources()], rows=rows)  # fmt: skip
        (probs,) = sc.score_batch([(cat, dense)])
        columns = {t: np.asarray(p, dtype=np.float64).tolist() for t, p in probs.items()}
        util_arr = np.empty(len(ids))
        for weights, at in _groups([tuple(c[3].items()) for c in calls]).items():
            pos = np.concatenate([np.arange(bounds[u], bounds[u + 1]) for u in at])
            util_arr[pos] = utility({t: np.asarray(p)[pos] for t, p in probs.items()}, dict(weights))
        util = util_arr.tolist()
        return [ScoredBatch(b, {t: col[bounds[u] : bounds[u + 1]] for t, col in columns.items()}, util[bounds[u] : bounds[u + 1]])
                for u, b in enumerate(batches)]  # fmt: skip

    def _retrieval_scores(self, calls: list[tuple], batches: list[CandidateBatch], nows: list[float]) -> np.ndarray:
        """The ``retrieval_score`` feature of the stacked candidates: the similarity's ``q · v``
        with each (surface, now)'s users encoded in one query-tower pass, else the two-tower
        source's score (:meth:`ranking.scorer.RankerScorer.features_for`)."""
        sim = getattr(self.scorer, "similarity", None)
        if sim is None:
            return np.concatenate([b.retrieval_scores() for b in batches])
        out: list[np.ndarray] = [np.empty(0, np.float32)] * len(calls)
        for (surface, now), at in _groups([(q.surface, t) for (q, *_), t in zip(calls, nows, strict=True)]).items():
            vectors = query_vectors(sim.model, sim.catalogue, [calls[u][1] for u in at], surface=surface, now=now)
            for u, q in zip(at, vectors, strict=True):
                b = batches[u]
                out[u] = sim.scores(calls[u][1], b.item_ids, surface=surface, now=now,
                                    rows=b.rows(self.scorer.catalogue), query_vector=q)  # fmt: skip
        return np.concatenate(out)


def _groups(keys: list) -> dict[Any, list[int]]:
    """Positions of each distinct key, in first-seen order."""
    out: dict[Any, list[int]] = {}
    for i, k in enumerate(keys):
        out.setdefault(k, []).append(i)
    return out


def _popularity(counter: Any, catalogue: Any, ids: list[str], rows: np.ndarray, now: float) -> np.ndarray:
    """``counter.values(ids, now)``, asked once per distinct catalogue item (a micro-batch's
    users share most of their candidates)."""
    out = np.empty(len(ids))
    known = rows >= 0
    if known.any():
        uniq, inverse = np.unique(rows[known], return_inverse=True)
        out[known] = counter.values(catalogue.item_ids[uniq].tolist(), now)[inverse.reshape(-1)]
    if not known.all():
        out[~known] = counter.values([ids[p] for p in np.flatnonzero(~known).tolist()], now)
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
