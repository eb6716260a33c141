"""The ranking stage: shared features → multi-task ranker → composed utility.

The three steps are separate methods so a Serve deployment can split them: the ingress
computes features (:meth:`RankerScorer.features`, it holds user state), the ranker
deployment stacks many requests into one forward pass (:meth:`RankerScorer.score_batch`
under ``@serve.batch``), and :meth:`RankerScorer.compose` turns probabilities into
:class:`ScoredCandidate` s. :meth:`RankerScorer.score` does all three in process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from core.catalogue import Catalogue
from core.contracts import MergedCandidate, Query, RankerResult, ScoredCandidate
from core.features import PopularityCounter, UserState, ranker_features
from ranking.utility import check_task_weights, utility

RETRIEVAL_SCORE_SOURCE = "two_tower"
"""The source whose score is the ranker's ``retrieval_score`` feature: training fills that
feature with the two-tower similarity ``q · v`` of every logged impression
(:mod:`training.ranker`), so serving passes the two-tower source's score where a candidate has
one and NaN (unknown: the model reads its training mean) where it has not — never another
source's score, whose scale the model has not seen (a trending count, a fresh-item age)."""


def candidate_columns(
    candidates: Sequence[MergedCandidate],
) -> tuple[list[str], np.ndarray, list[str]]:
    """What the ranker reads of ``B`` candidates: item ids, the two-tower score ``(B,)`` float32
    (NaN where the two-tower source did not propose the item) and the best source's name."""
    nan = float("nan")
    ids: list[str] = []
    scores: list[float] = []
    sources: list[str] = []
    for item, prov in candidates:  # one pass; most candidates have one source
        ids.append(item)
        if len(prov) == 1:
            p = prov[0]
            sources.append(p.source)
            scores.append(p.score if p.source == RETRIEVAL_SCORE_SOURCE else nan)
            continue
        score = nan
        for p in prov:
            if p.source == RETRIEVAL_SCORE_SOURCE:
                score = p.score
                break
        scores.append(score)
        sources.append(min(prov, key=_best_key).source)  # MergedCandidate.best
    return ids, np.array(scores, dtype=np.float32), sources


def _best_key(c) -> tuple[int, float]:
    return c.rank, -c.score


def compose(
    candidates: Sequence[MergedCandidate],
    probs: Mapping[str, np.ndarray],
    task_weights: Mapping[str, float],
) -> list[ScoredCandidate]:
    """One :class:`ScoredCandidate` per candidate from ``{task: (B,)}`` probabilities."""
    u = utility(probs, task_weights).tolist()
    tasks = list(probs)
    if not candidates:
        return []
    rows = zip(*(np.asarray(probs[t], dtype=np.float64).tolist() for t in tasks), strict=True)
    task_scores = [dict(zip(tasks, row, strict=True)) for row in rows]
    ids, provenance = zip(*candidates, strict=True)
    # ``_make`` builds each tuple in C (the NamedTuple constructor is a Python-level call).
    return list(map(ScoredCandidate._make, zip(ids, provenance, task_scores, u, strict=True)))


@runtime_checkable
class RankerModel(Protocol):
    """``ranking.model.MultiTaskRanker`` satisfies this."""

    tasks: Sequence[str]

    def predict(self, cat: np.ndarray, dense: np.ndarray) -> dict[str, np.ndarray]:
        """``cat`` ``(B, 6)`` int64, ``dense`` ``(B, 8)`` float32 -> ``{task: (B,)}`` calibrated
        probabilities."""
        ...


class RankerScorer:
    """Invariant: one :class:`ScoredCandidate` per input candidate, in input order."""

    def __init__(
        self,
        model: RankerModel,
        catalogue: Catalogue,
        popularity: PopularityCounter,
        *,
        version: str,
        similarity: Any = None,
    ):
        """``similarity``: a :class:`retrieval.similarity.TwoTowerSimilarity` of the two-tower
        this ranker was trained with; when given, every candidate's ``retrieval_score`` is its
        ``q · v`` (as in training) instead of the two-tower source's score or NaN."""
        self.model = model
        self.catalogue = catalogue
        self.popularity = popularity
        self.version = version
        self.similarity = similarity
        self.tasks = tuple(model.tasks)

    def features(
        self, query: Query, user_state: UserState, candidates: Sequence[MergedCandidate]
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.features_for(query, user_state, *candidate_columns(candidates))

    def features_for(
        self,
        query: Query,
        user_state: UserState,
        item_ids: Sequence[str],
        retrieval_scores: np.ndarray,
        sources: Sequence[str],
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`features` from :func:`candidate_columns` (what crosses a Serve hop)."""
        now = query.now.timestamp()
        if self.similarity is not None:
            retrieval_scores = self.similarity.scores(
                user_state, item_ids, surface=query.surface, now=now
            )
        return ranker_features(
            user_state,
            item_ids,
            self.catalogue,
            popularity=self.popularity.values(item_ids, now),
            now=now,
            surface=query.surface,
            retrieval_scores=retrieval_scores,
            sources=sources,
        )

    def score_batch(
        self, batch: Sequence[tuple[np.ndarray, np.ndarray]]
    ) -> list[dict[str, np.ndarray]]:
        """Several requests' ``(cat (B_i, 6), dense (B_i, 8))`` in one forward pass; returns
        ``{task: (B_i,)}`` per request, in order."""
        sizes = [len(cat) for cat, _ in batch]
        if sum(sizes) == 0:
            return [{t: np.zeros(0) for t in self.tasks} for _ in batch]
        cat = np.concatenate([c for c, _ in batch])
        dense = np.concatenate([d for _, d in batch])
        probs = self.model.predict(cat, dense)
        bounds = np.cumsum([0, *sizes])
        return [
            {t: np.asarray(p)[bounds[i] : bounds[i + 1]] for t, p in probs.items()}
            for i in range(len(batch))
        ]

    def compose(
        self,
        candidates: Sequence[MergedCandidate],
        probs: Mapping[str, np.ndarray],
        task_weights: Mapping[str, float],
    ) -> list[ScoredCandidate]:
        return compose(candidates, probs, task_weights)

    def _score_sync(
        self,
        query: Query,
        user_state: UserState,
        candidates: Sequence[MergedCandidate],
        task_weights: Mapping[str, float],
    ) -> list[ScoredCandidate]:
        check_task_weights(task_weights, self.tasks)
        (probs,) = self.score_batch([self.features(query, user_state, candidates)])
        return self.compose(candidates, probs, task_weights)

    async def score(
        self,
        query: Query,
        user_state: UserState,
        candidates: Sequence[MergedCandidate],
        task_weights: Mapping[str, float],
    ) -> RankerResult:
        # The forward pass is CPU-bound; a thread lets the pipeline's timeout still fire.
        scored = await asyncio.to_thread(
            self._score_sync, query, user_state, candidates, task_weights
        )
        return RankerResult(scored, self.version)
