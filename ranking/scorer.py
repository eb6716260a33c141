"""The ranking stage: shared features → multi-task ranker → composed utility.

The three steps are separate methods so a Serve deployment can split them: the ingress
computes features (:meth:`RankerScorer.features`, it holds user state), the ranker
deployment stacks many requests into one forward pass (:meth:`RankerScorer.score_batch`
under ``@serve.batch``), and :meth:`RankerScorer.compose` turns probabilities into
:class:`ScoredCandidate` s. :meth:`RankerScorer.score` does all three in process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from core.candidates import CandidateBatch, ScoredBatch
from core.catalogue import Catalogue
from core.contracts import MergedCandidate, Query, RankerResult
from core.features import PopularityCounter, UserState, ranker_features, source_indices
from ranking.utility import check_task_weights, utility


def candidate_columns(
    candidates: Sequence[MergedCandidate],
) -> tuple[list[str], np.ndarray, list[str]]:
    """What the ranker reads of ``B`` candidates: item ids, the two-tower score ``(B,)`` float32
    (NaN where the two-tower source did not propose the item; training fills that feature with
    the two-tower similarity ``q · v``, so serving never passes another source's score, whose
    scale the model has not seen) and the best source's name. Columns of the request's
    :class:`CandidateBatch`, computed once per batch."""
    batch = CandidateBatch.of(candidates)
    return batch.item_ids, batch.retrieval_scores(), batch.best_sources()


def compose(
    candidates: Sequence[MergedCandidate],
    probs: Mapping[str, np.ndarray],
    task_weights: Mapping[str, float],
) -> ScoredBatch:
    """The candidates scored: ``{task: (B,)}`` probabilities and the composed utility, as one
    :class:`ScoredBatch` (columns; a :class:`ScoredCandidate` per row on access)."""
    batch = CandidateBatch.of(candidates)
    u = utility(probs, task_weights).tolist() if len(batch) else []
    columns = {t: np.asarray(p, dtype=np.float64).tolist() for t, p in probs.items()}
    return ScoredBatch(batch, columns, u, floats=True)  # tolist() of float64 arrays


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
        # A PopularityCounter is read by catalogue row (aligned now, not on a request); another
        # reader of counts (one that follows a replica's current stages) is read by id.
        self._popularity_by_row = hasattr(popularity, "align")
        if self._popularity_by_row:
            popularity.align(catalogue)

    def features(
        self, query: Query, user_state: UserState, candidates: Sequence[MergedCandidate],
        query_vectors: Mapping[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        batch = CandidateBatch.of(candidates)
        # With a similarity every retrieval_score is its q · v: the batch's two-tower scores
        # would be computed only to be replaced (features_for ignores them then).
        retrieval = None if self.similarity is not None else batch.retrieval_scores()
        # The best sources as SOURCE_KINDS indices from the batch's codes: a lookup per distinct
        # source instead of one per candidate.
        sources = source_indices(*batch.best_source_codes())
        return self.features_for(query, user_state, batch.item_ids, retrieval, sources,
                                 rows=batch.rows(self.catalogue), query_vectors=query_vectors)  # fmt: skip

    def features_for(
        self,
        query: Query,
        user_state: UserState,
        item_ids: Sequence[str],
        retrieval_scores: np.ndarray | None,
        sources: Sequence[str] | np.ndarray,
        rows: np.ndarray | None = None,
        query_vectors: Mapping[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`features` from :func:`candidate_columns` (what crosses a Serve hop;
        ``retrieval_scores`` may be ``None`` when this scorer has a similarity, which replaces them;
        ``sources`` names, or :data:`core.features.SOURCE_KINDS` indices as an int64 array);
        ``rows``: the items' catalogue rows when already looked up; ``query_vectors``:
        ``{two-tower version: query vector}`` the request's sources computed; the one of the
        similarity's version (the two-tower this ranker was trained with) is used, otherwise
        the similarity encodes the user itself."""
        now = query.now.timestamp()
        if rows is None:
            rows = self.catalogue.index_of(item_ids)
        if self.similarity is not None:
            q = (query_vectors or {}).get(self.similarity.version)
            retrieval_scores = self.similarity.scores(
                user_state, item_ids, surface=query.surface, now=now, rows=rows, query_vector=q
            )
        return ranker_features(
            user_state,
            item_ids,
            self.catalogue,
            popularity=(self.popularity.values(item_ids, now, rows=rows, catalogue=self.catalogue)
                        if self._popularity_by_row else self.popularity.values(item_ids, now)),
            now=now,
            surface=query.surface,
            retrieval_scores=retrieval_scores,
            sources=sources,
            rows=rows,
        )

    def score_batch(
        self, batch: Sequence[tuple[np.ndarray, np.ndarray]]
    ) -> list[dict[str, np.ndarray]]:
        """Several requests' ``(cat (B_i, 6), dense (B_i, 8))`` in one forward pass; returns
        ``{task: (B_i,)}`` per request, in order."""
        sizes = [len(cat) for cat, _ in batch]
        if sum(sizes) == 0:
            return [{t: np.zeros(0) for t in self.tasks} for _ in batch]
        if len(batch) == 1:  # one request (in process): its arrays as they are, nothing to split
            return [{t: np.asarray(p) for t, p in self.model.predict(*batch[0]).items()}]
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
    ) -> ScoredBatch:
        return compose(candidates, probs, task_weights)

    def _score_sync(
        self,
        query: Query,
        user_state: UserState,
        candidates: Sequence[MergedCandidate],
        task_weights: Mapping[str, float],
        query_vectors: Mapping[str, np.ndarray] | None = None,
    ) -> ScoredBatch:
        check_task_weights(task_weights, self.tasks)
        (probs,) = self.score_batch([self.features(query, user_state, candidates, query_vectors)])
        return self.compose(candidates, probs, task_weights)

    async def score(
        self,
        query: Query,
        user_state: UserState,
        candidates: Sequence[MergedCandidate],
        task_weights: Mapping[str, float],
        *,
        query_vectors: Mapping[str, np.ndarray] | None = None,
    ) -> RankerResult:
        # On the calling thread, as the Serve ingress scores (``LocalRanker``): features and one
        # forward pass over a few hundred rows are bounded CPU work (≈ 3 ms), and the thread
        # hand-off cost ≈ 1 ms of CPU and a wake-up per request (docs/performance.md). Inline,
        # the ranker's timeout cannot cut it short (in a thread it abandoned the wait, never
        # the work): it bounds an awaiting ranker (the ``Ranker`` deployment's hop).
        scored = self._score_sync(query, user_state, candidates, task_weights, query_vectors)
        return RankerResult(scored, self.version)
